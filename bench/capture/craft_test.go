package capture

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// frame is one crafted packet of a synthetic capture.
type frame struct {
	data []byte
	ci   gopacket.CaptureInfo
}

var (
	craftClient = net.IPv4(198, 18, 0, 1).To4()
	craftServer = net.IPv4(198, 18, 0, 2).To4()
	craftStart  = time.Unix(1_800_000_000, 0)
)

// crafter builds a synthetic TCP/MQTT conversation frame by frame.
type crafter struct {
	t      testing.TB
	frames []frame
	cseq   uint32 // next client sequence number
	sseq   uint32
	at     time.Duration
	cport  uint16
}

func newCrafter(t testing.TB) *crafter {
	return &crafter{t: t, cseq: 1000, sseq: 5000, cport: 40000}
}

func (c *crafter) tcp(fromClient bool, flags string, seq uint32, payload []byte) []byte {
	c.t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: craftClient, DstIP: craftServer}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(c.cport), DstPort: 1883, Seq: seq, Window: 65535}
	if !fromClient {
		ip.SrcIP, ip.DstIP = craftServer, craftClient
		tcp.SrcPort, tcp.DstPort = 1883, layers.TCPPort(c.cport)
		tcp.Ack = c.cseq
	} else {
		tcp.Ack = c.sseq
	}
	for _, f := range flags {
		switch f {
		case 'S':
			tcp.SYN = true
		case 'A':
			tcp.ACK = true
		case 'F':
			tcp.FIN = true
		case 'P':
			tcp.PSH = true
		}
	}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, tcp, gopacket.Payload(payload))
	if err != nil {
		c.t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// add appends a frame 10 ms after the previous one.
func (c *crafter) add(data []byte) {
	c.at += 10 * time.Millisecond
	c.frames = append(c.frames, frame{data: data, ci: gopacket.CaptureInfo{
		Timestamp: craftStart.Add(c.at), CaptureLength: len(data), Length: len(data)}})
}

// send appends a data segment and advances the sender's sequence number.
func (c *crafter) send(fromClient bool, payload []byte) {
	if fromClient {
		c.add(c.tcp(true, "PA", c.cseq, payload))
		c.cseq += uint32(len(payload))
	} else {
		c.add(c.tcp(false, "PA", c.sseq, payload))
		c.sseq += uint32(len(payload))
	}
}

func (c *crafter) handshake() {
	c.add(c.tcp(true, "S", c.cseq, nil))
	c.cseq++
	c.add(c.tcp(false, "SA", c.sseq, nil))
	c.sseq++
	c.add(c.tcp(true, "A", c.cseq, nil))
}

// craftPublish is the PUBLISH of the synthetic session: 3000 payload bytes.
func craftPublish() []byte {
	return mqtt.AppendPublish(nil, "u/bob00002/m1", bytes.Repeat([]byte{'x'}, 3000), 1, false, false, 7)
}

// craftSession returns the frames of one good session (packet numbers in
// brackets): handshake [1-3], CONNECT [4], CONNACK [5], a PUBLISH in two
// segments [6,7] with [8] a duplicate of [7] (as on loopback), PUBACK [9],
// a delivery to the client [10], DISCONNECT [11], FIN [12]; plus a UDP
// datagram [13] that is not ours.
func craftSession(t testing.TB) []frame {
	c := newCrafter(t)
	c.handshake()
	c.send(true, mqtt.AppendConnect(nil, &mqtt.Connect{CleanSession: true, KeepAlive: 60, ClientID: []byte("alice")}))
	c.send(false, mqtt.AppendConnack(nil, false, 0))
	pub := craftPublish()
	c.send(true, pub[:1000])
	seq := c.cseq
	c.send(true, pub[1000:])
	c.add(c.tcp(true, "PA", seq, pub[1000:])) // duplicate
	c.send(false, mqtt.AppendPuback(nil, 7))
	c.send(false, mqtt.AppendPublish(nil, "u/alice/m/bob00002/x", []byte("hello"), 1, false, false, 1))
	c.send(true, mqtt.AppendDisconnect(nil))
	c.add(c.tcp(true, "FA", c.cseq, nil))
	c.add(udpFrame(t))
	return c.frames
}

func udpFrame(t testing.TB) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: craftClient, DstIP: craftServer}
	udp := &layers.UDP{SrcPort: 5353, DstPort: 1883}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, udp, gopacket.Payload("not mqtt")); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return buf.Bytes()
}

// pcapBytes writes frames as a microsecond pcap file.
func pcapBytes(t testing.TB, frames []frame) []byte {
	var b bytes.Buffer
	w := pcapgo.NewWriter(&b)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := w.WritePacket(f.ci, f.data); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func pcapngBytes(t testing.TB, frames []frame) []byte {
	var b bytes.Buffer
	w, err := pcapgo.NewNgWriter(&b, layers.LinkTypeEthernet)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if err := w.WritePacket(f.ci, f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// craftedFiles returns the malformed captures under testdata/ by name, each
// damaged in one packet.
func craftedFiles(t testing.TB) map[string][]byte {
	good := craftSession(t)
	clone := func() []frame {
		out := make([]frame, len(good))
		for i, f := range good {
			out[i] = frame{data: append([]byte(nil), f.data...), ci: f.ci}
		}
		return out
	}
	files := map[string][]byte{}
	files["empty.pcap"] = nil
	files["bad-magic.pcap"] = []byte("this is not a capture file at all\n")
	full := pcapBytes(t, good)
	files["truncated-header.pcap"] = full[:14]
	// Cut inside packet 7's data: 24-byte file header, 16 per record.
	off := 24
	for i := 0; i < 6; i++ {
		off += 16 + len(good[i].data)
	}
	files["truncated-packet.pcap"] = full[:off+16+40]
	// Packet 3 claims more captured bytes than the packet had.
	b := append([]byte(nil), full...)
	off3 := 24 + 16 + len(good[0].data) + 16 + len(good[1].data)
	binary.LittleEndian.PutUint32(b[off3+12:], 10) // orig len 10 < caplen
	files["caplen.pcap"] = b
	// Packet 4's IPv4 header length field says 8 bytes (minimum is 20).
	fr := clone()
	fr[3].data[14] = 0x42
	files["bad-ip.pcap"] = pcapBytes(t, fr)
	// Packet 6 was cut by the snap length.
	fr = clone()
	fr[5].data = fr[5].data[:200]
	fr[5].ci.CaptureLength = 200
	files["snap-cut.pcap"] = pcapBytes(t, fr)
	// Packet 5 (CONNACK) carries a remaining length of five bytes.
	fr = clone()
	c := newCrafter(t)
	c.sseq = 5001
	fr[4].data = c.tcp(false, "PA", 5001, []byte{0x20, 0xff, 0xff, 0xff, 0xff, 0x01})
	fr[4].ci.CaptureLength, fr[4].ci.Length = len(fr[4].data), len(fr[4].data)
	files["bad-mqtt.pcap"] = pcapBytes(t, fr)
	// Packet 6 (the PUBLISH's first segment) was lost.
	fr = clone()
	files["gap.pcap"] = pcapBytes(t, append(fr[:5:5], fr[6:]...))
	// Only a UDP datagram.
	files["no-session.pcap"] = pcapBytes(t, good[len(good)-1:])
	return files
}
