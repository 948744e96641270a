package main

import (
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/edge/mqtt"
)

func TestInboxHelpGolden(t *testing.T) {
	helpGolden(t, []helpCase{
		{"inbox-help.golden", []string{"inbox", "--help"}},
		{"inbox-list-help.golden", []string{"inbox", "list", "--help"}},
		{"inbox-purge-help.golden", []string{"inbox", "purge", "--help"}},
	})
}

// publishQoS1 sends QoS 1 messages as client id from over MQTT and waits
// for each PUBACK.
func publishQoS1(t *testing.T, s *edge.Server, from string, topics ...string) {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{ProtocolName: []byte("MQTT"), ProtocolLevel: 4, ClientID: []byte(from), CleanSession: true, KeepAlive: 60}))
	var out []byte
	for i, tp := range topics {
		out = mqtt.AppendPublish(out, tp, []byte("payload"), 1, false, false, uint16(i+1))
	}
	c.Write(out)
	var buf []byte
	tmp := make([]byte, 4096)
	for acks := 0; acks < len(topics); {
		var p mqtt.Packet
		n, err := mqtt.Decode(buf, 0, &p)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			if p.Type == mqtt.TypePuback {
				acks++
			}
			buf = buf[n:]
			continue
		}
		k, err := c.Read(tmp)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		buf = append(buf, tmp[:k]...)
	}
}

func TestInboxAgainstServer(t *testing.T) {
	s, admin := startAdminServer(t)
	publishQoS1(t, s, "alice", "u/bob/m1", "u/bob/m2", "u/bob/m3", "u/carol/m1")
	out, errOut, code := edgectl("inbox", "list", "--admin", admin)
	want := regexp.MustCompile(`^USER +MESSAGES +HELD +STATE\nbob +3 +[0-9.]+ (B|KiB) +never-connected\ncarol +1 +[0-9.]+ (B|KiB) +never-connected\n2 inboxes hold [0-9.]+ (B|KiB); 2 shown\n$`)
	if code != exitOK || !want.MatchString(out) {
		t.Fatalf("inbox list: exit %d, out %q, err %q", code, out, errOut)
	}
	if out, _, code := edgectl("inbox", "list", "--limit", "1", "--admin", admin); code != exitOK || strings.Contains(out, "carol") || !strings.Contains(out, "2 inboxes hold") {
		t.Fatalf("inbox list --limit 1: exit %d, %q", code, out)
	}
	steps := []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"inbox", "purge", "bob"}, exitOK, "purged 3 messages ("},
		{[]string{"inbox", "purge", "bob"}, exitFailed, ""},
		{[]string{"inbox", "purge"}, exitUsage, ""},
		{[]string{"inbox", "list", "--limit", "0"}, exitUsage, ""},
		{[]string{"inbox", "drop", "bob"}, exitUsage, ""},
	}
	for _, st := range steps {
		out, errOut, code := edgectl(append(st.args, "--admin", admin)...)
		if code != st.code || !strings.HasPrefix(out, st.out) {
			t.Fatalf("edgectl %s: exit %d, out %q, err %q; want exit %d, out %q...", strings.Join(st.args, " "), code, out, errOut, st.code, st.out)
		}
	}
	if n := inboxLen(s, "bob"); n != 0 {
		t.Fatalf("bob's inbox holds %d after purge", n)
	}
	if _, errOut, code := edgectl("inbox", "purge", "bob", "--admin", admin); !strings.Contains(errOut, "no such inbox") || code != exitFailed {
		t.Fatalf("purge of nothing: exit %d, %q", code, errOut)
	}
	// ".." is a profile id; edgectl purges it with DELETE /inboxes?user=
	// (the path form would be cleaned away by the server's mux).
	publishQoS1(t, s, "dave", "u/../m1")
	if out, errOut, code := edgectl("inbox", "purge", "..", "--admin", admin); code != exitOK || !strings.HasPrefix(out, "purged 1 messages (") || inboxLen(s, "..") != 0 {
		t.Fatalf("inbox purge ..: exit %d, out %q, err %q", code, out, errOut)
	}
}

// inboxLen returns the number of messages in user's inbox (0 if it has
// none), from the server's inbox listing.
func inboxLen(s *edge.Server, user string) int {
	top, _, _ := s.Inboxes(1 << 30)
	for _, in := range top {
		if in.User == user {
			return in.Messages
		}
	}
	return 0
}
