package edge

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/extensions/topicaliases"
)

// paho5 is an Eclipse paho.golang MQTT 5.0 client connected to s: a
// real v5 client implementation, not the codec's. Received PUBLISHes come
// on msgs (paho acknowledges them itself).
type paho5 struct {
	*paho.Client
	msgs    chan *paho.Publish
	connack *paho.Connack
}

// dialPaho connects a paho.golang client to s as id; cp adjusts the
// CONNECT. The client is disconnected at cleanup.
func dialPaho(t *testing.T, s *Server, id string, cp func(*paho.Connect)) *paho5 {
	t.Helper()
	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	pc := &paho5{msgs: make(chan *paho.Publish, 64)}
	pc.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(r paho.PublishReceived) (bool, error) {
			select {
			case pc.msgs <- r.Packet:
			default:
				t.Errorf("%s: more than %d messages unread", id, cap(pc.msgs))
			}
			return true, nil
		}},
	})
	c := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}
	if cp != nil {
		cp(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := pc.Connect(ctx, c)
	if err != nil {
		conn.Close()
		t.Fatalf("paho connect %s: %v (%+v)", id, err, ca)
	}
	pc.connack = ca
	t.Cleanup(func() {
		pc.Disconnect(&paho.Disconnect{ReasonCode: 0})
		select {
		case <-pc.Done():
		case <-time.After(10 * time.Second):
			t.Errorf("paho client %s did not stop", id)
		}
	})
	return pc
}

// next returns the next message pc received, failing after 10 s.
func (pc *paho5) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case m := <-pc.msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10 s")
		return nil
	}
}

func (pc *paho5) sub(t *testing.T, subID int, opts ...paho.SubscribeOptions) {
	t.Helper()
	s := &paho.Subscribe{Subscriptions: opts}
	if subID != 0 {
		s.Properties = &paho.SubscribeProperties{SubscriptionIdentifier: &subID}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := pc.Subscribe(ctx, s)
	if err != nil {
		t.Fatalf("subscribe %+v: %v (%+v)", opts, err, sa)
	}
	for i, code := range sa.Reasons {
		if code != opts[i].QoS {
			t.Fatalf("SUBACK %v for %+v", sa.Reasons, opts)
		}
	}
}

func (pc *paho5) pub(t *testing.T, p *paho.Publish) (*paho.PublishResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return pc.Publish(ctx, p)
}

// TestV5Paho drives edged with Eclipse paho.golang clients end to end:
// CONNACK properties, subscription options and identifiers, a QoS 1
// request with user properties, response topic and correlation data that
// arrives intact and is answered on the response topic (request/response),
// a direct message to another user's inbox and its delivery receipt, PUBACK
// 0x97 for a full inbox, and a shared subscription spread over its members.
func TestV5Paho(t *testing.T) {
	s := startServer(t, nil)
	alice := dialPaho(t, s, "alice", nil)
	if ca := alice.connack; ca.ReasonCode != 0 || ca.Properties == nil || ca.Properties.ReceiveMaximum == nil ||
		*ca.Properties.ReceiveMaximum != receiveMax5 || ca.Properties.TopicAliasMaximum == nil ||
		*ca.Properties.TopicAliasMaximum != aliasMax5 || ca.Properties.MaximumPacketSize == nil ||
		*ca.Properties.MaximumPacketSize != uint32(s.cfg.MaxPacketSize) {
		t.Fatalf("CONNACK %+v %+v", ca, ca.Properties)
	}
	bob := dialPaho(t, s, "bob", nil)

	// alice serves requests on svc/#: No Local (her own replies there are
	// not sent back to her), subscription identifier 7.
	alice.sub(t, 7, paho.SubscribeOptions{Topic: "svc/#", QoS: 1, NoLocal: true})
	bob.sub(t, 0, paho.SubscribeOptions{Topic: "reply/bob", QoS: 1})
	pf := byte(1)
	exp := uint32(120)
	req := &paho.Publish{Topic: "svc/time", QoS: 1, Payload: []byte("what time is it"),
		Properties: &paho.PublishProperties{ResponseTopic: "reply/bob", CorrelationData: []byte{0xC0, 0xFF, 0xEE},
			ContentType: "text/plain", PayloadFormat: &pf, MessageExpiry: &exp,
			User: paho.UserProperties{{Key: "trace", Value: "t1"}, {Key: "trace", Value: "t2"}}}}
	if pr, err := bob.pub(t, req); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("request PUBLISH: %v %+v", err, pr)
	}
	m := alice.next(t)
	p := m.Properties
	if m.Topic != "svc/time" || string(m.Payload) != "what time is it" || m.QoS != 1 || p == nil ||
		p.ResponseTopic != "reply/bob" || string(p.CorrelationData) != "\xC0\xFF\xEE" || p.ContentType != "text/plain" ||
		p.PayloadFormat == nil || *p.PayloadFormat != 1 || p.MessageExpiry == nil || *p.MessageExpiry == 0 ||
		*p.MessageExpiry > exp || p.SubscriptionIdentifier == nil || *p.SubscriptionIdentifier != 7 ||
		len(p.User) != 2 || p.User[0] != (paho.UserProperty{Key: "trace", Value: "t1"}) ||
		p.User[1] != (paho.UserProperty{Key: "trace", Value: "t2"}) {
		t.Fatalf("request delivered as %+v with %+v", m, p)
	}
	// The response: on the request's response topic with its correlation
	// data. alice also publishes on svc/ herself: No Local keeps it from her.
	if _, err := alice.pub(t, &paho.Publish{Topic: "svc/own", QoS: 1, Payload: []byte("mine")}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.pub(t, &paho.Publish{Topic: p.ResponseTopic, QoS: 1, Payload: []byte("noon"),
		Properties: &paho.PublishProperties{CorrelationData: p.CorrelationData}}); err != nil {
		t.Fatal(err)
	}
	r := bob.next(t)
	if r.Topic != "reply/bob" || string(r.Payload) != "noon" || r.Properties == nil ||
		string(r.Properties.CorrelationData) != "\xC0\xFF\xEE" {
		t.Fatalf("response %+v", r)
	}
	if _, err := bob.pub(t, &paho.Publish{Topic: "svc/next", QoS: 1, Payload: []byte("2")}); err != nil {
		t.Fatal(err)
	}
	if m := alice.next(t); m.Topic != "svc/next" {
		t.Fatalf("alice got %q %q: No Local not kept", m.Topic, m.Payload)
	}

	// The profile: a direct message to alice's inbox, delivered with its
	// user property, and bob's delivery receipt once paho acknowledged it.
	bob.sub(t, 0, paho.SubscribeOptions{Topic: "u/bob/#", QoS: 1})
	if pr, err := bob.pub(t, &paho.Publish{Topic: "u/alice/m1", QoS: 1, Payload: []byte("hi alice"),
		Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "lang", Value: "en"}}}}); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("direct message: %v %+v", err, pr)
	}
	if d := alice.next(t); d.Topic != "u/alice/m/bob/m1" || string(d.Payload) != "hi alice" ||
		d.Properties == nil || d.Properties.User.Get("lang") != "en" {
		t.Fatalf("alice's inbox delivered %+v", d)
	}
	if rc := bob.next(t); rc.Topic != "u/bob/d/alice/m1" {
		t.Fatalf("receipt %+v", rc)
	}
	// carol is offline: her inbox (one message on this server: a bound
	// that also holds back generic messages) fills; the next gets 0x97.
	small := startServer(t, func(c *Config) { c.InboxMessages = 1 })
	dave := dialPaho(t, small, "dave", nil)
	if _, err := dave.pub(t, &paho.Publish{Topic: "u/carol/c1", QoS: 1, Payload: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	if pr, err := dave.pub(t, &paho.Publish{Topic: "u/carol/c2", QoS: 1, Payload: []byte("2")}); err == nil || pr == nil || pr.ReasonCode != 0x97 {
		t.Fatalf("full inbox: %v %+v, want PUBACK 0x97", err, pr)
	}

	// A shared subscription: each message to one member, in turn.
	w1 := dialPaho(t, s, "w1", nil)
	w2 := dialPaho(t, s, "w2", nil)
	w1.sub(t, 0, paho.SubscribeOptions{Topic: "$share/workers/job/#", QoS: 1})
	w2.sub(t, 0, paho.SubscribeOptions{Topic: "$share/workers/job/#", QoS: 1})
	const jobs = 10
	for i := range jobs {
		if _, err := bob.pub(t, &paho.Publish{Topic: "job/x", QoS: 1, Payload: []byte{byte('0' + i)}}); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	n1 := 0
	for range jobs {
		select {
		case m := <-w1.msgs:
			seen[string(m.Payload)]++
			n1++
		case m := <-w2.msgs:
			seen[string(m.Payload)]++
		case <-time.After(10 * time.Second):
			t.Fatalf("shared subscription: %d of %d jobs delivered", len(seen), jobs)
		}
	}
	if len(seen) != jobs || n1 != jobs/2 {
		t.Fatalf("shared subscription: %v, %d to w1 (want each job once, half each)", seen, n1)
	}
	select {
	case m := <-w1.msgs:
		t.Fatalf("a job twice: %q", m.Payload)
	case m := <-w2.msgs:
		t.Fatalf("a job twice: %q", m.Payload)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestV5PahoTopicAliases: topic aliases both ways with paho.golang. Its
// topicaliases extension picks aliases for what it publishes (PublishHook);
// toward it (Topic Alias Maximum 4 in its CONNECT) the server sends the
// alias alone after the first PUBLISH of a topic, and paho parses each,
// the alias resolved with the extension's table as paho leaves that to
// the application.
func TestV5PahoTopicAliases(t *testing.T) {
	s := startServer(t, nil)
	in := topicaliases.NewTAHandler(4)
	sub := dialPaho(t, s, "sub", func(c *paho.Connect) {
		c.Properties = &paho.ConnectProperties{TopicAliasMaximum: paho.Uint16(4)}
	})
	sub.sub(t, 0, paho.SubscribeOptions{Topic: "pa/#", QoS: 1})
	out := topicaliases.NewTAHandler(aliasMax5)
	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	pub := &paho5{Client: paho.NewClient(paho.ClientConfig{Conn: conn, PublishHook: out.PublishHook})}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pub.Connect(ctx, &paho.Connect{ClientID: "pub", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pub.Disconnect(&paho.Disconnect{})
		<-pub.Done()
	})
	topics := []string{"pa/one", "pa/one", "pa/two", "pa/one", "pa/two", "pa/two"}
	before := s.stats.aliasOut.Load()
	for i, topic := range topics {
		if _, err := pub.pub(t, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte{byte('0' + i)}}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	bare := 0
	for i, want := range topics {
		m := sub.next(t)
		topic := m.Topic
		if m.Properties != nil && m.Properties.TopicAlias != nil {
			a := *m.Properties.TopicAlias
			if topic != "" {
				in.ResetAlias(topic, a)
			} else {
				topic = in.GetTopic(a)
				bare++
			}
		}
		if topic != want || string(m.Payload) != string(rune('0'+i)) {
			t.Fatalf("message %d: topic %q (wire %q) payload %q, want %q", i, topic, m.Topic, m.Payload, want)
		}
	}
	if bare != 4 || s.stats.aliasOut.Load()-before != 4 {
		t.Fatalf("%d messages with the alias alone (server counted %d), want 4", bare, s.stats.aliasOut.Load()-before)
	}
}
