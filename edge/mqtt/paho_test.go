package mqtt

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/eclipse/paho.mqtt.golang/packets"
)

// TestPahoInterop cross-checks the golden bytes with an independent
// implementation, Eclipse Paho's packets package: Paho must parse each golden
// packet and write back the same bytes, and our Decode must agree with what
// Paho parsed.
func TestPahoInterop(t *testing.T) {
	for _, g := range goldens() {
		t.Run(g.name, func(t *testing.T) {
			cp, err := packets.ReadPacket(bytes.NewReader(g.wire))
			if err != nil {
				t.Fatalf("paho ReadPacket: %v", err)
			}
			var w bytes.Buffer
			if err := cp.Write(&w); err != nil {
				t.Fatalf("paho Write: %v", err)
			}
			if !bytes.Equal(w.Bytes(), g.wire) {
				t.Fatalf("paho re-encoding:\n got % x\nwant % x", w.Bytes(), g.wire)
			}
			var p Packet
			if _, err := Decode(w.Bytes(), 0, &p); err != nil {
				t.Fatalf("Decode(paho bytes): %v", err)
			}
			checkAgainstPaho(t, &p, cp)
		})
	}
}

func checkAgainstPaho(t *testing.T, p *Packet, cp packets.ControlPacket) {
	t.Helper()
	eq := func(what string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ours %v, paho %v", what, got, want)
		}
	}
	switch c := cp.(type) {
	case *packets.PublishPacket:
		eq("topic", string(p.Topic), c.TopicName)
		eq("payload", string(p.Payload), string(c.Payload))
		eq("qos", p.QoS, c.Qos)
		eq("dup", p.Dup, c.Dup)
		eq("retain", p.Retain, c.Retain)
		if p.QoS > 0 {
			eq("id", p.PacketID, c.MessageID)
		}
	case *packets.ConnectPacket:
		eq("name", string(p.Connect.ProtocolName), c.ProtocolName)
		eq("level", p.Connect.ProtocolLevel, c.ProtocolVersion)
		eq("clean", p.Connect.CleanSession, c.CleanSession)
		eq("keepalive", p.Connect.KeepAlive, c.Keepalive)
		eq("client id", string(p.Connect.ClientID), c.ClientIdentifier)
		eq("will", p.Connect.WillFlag, c.WillFlag)
		eq("will qos", p.Connect.WillQoS, c.WillQos)
		eq("will topic", string(p.Connect.WillTopic), c.WillTopic)
		eq("username", string(p.Connect.Username), c.Username)
		eq("password", string(p.Connect.Password), string(c.Password))
	case *packets.ConnackPacket:
		eq("session present", p.SessionPresent, c.SessionPresent)
		eq("code", p.ReturnCode, c.ReturnCode)
	case *packets.SubscribePacket:
		var topics []string
		var qoss []byte
		for f, q := range p.Filters() {
			topics = append(topics, string(f))
			qoss = append(qoss, q)
		}
		eq("id", p.PacketID, c.MessageID)
		eq("filters", topics, c.Topics)
		eq("qos", qoss, c.Qoss)
	case *packets.UnsubscribePacket:
		var topics []string
		for f := range p.Filters() {
			topics = append(topics, string(f))
		}
		eq("id", p.PacketID, c.MessageID)
		eq("filters", topics, c.Topics)
	case *packets.SubackPacket:
		eq("id", p.PacketID, c.MessageID)
		eq("codes", []byte(p.ReturnCodes), c.ReturnCodes)
	case *packets.PubackPacket:
		eq("id", p.PacketID, c.MessageID)
	case *packets.PubrecPacket:
		eq("id", p.PacketID, c.MessageID)
	case *packets.PubrelPacket:
		eq("id", p.PacketID, c.MessageID)
	case *packets.PubcompPacket:
		eq("id", p.PacketID, c.MessageID)
	case *packets.UnsubackPacket:
		eq("id", p.PacketID, c.MessageID)
	case *packets.PingreqPacket, *packets.PingrespPacket, *packets.DisconnectPacket:
	default:
		t.Fatalf("unexpected paho packet %T", cp)
	}
}
