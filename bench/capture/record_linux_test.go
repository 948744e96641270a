package capture

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/testenv"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// TestRecordMainLoopback runs edgebench record on the host's lo against a
// server on a free port while clients connect and disconnect, and checks the
// file: the requested number of packets, all TCP to or from the port, and
// no packet twice (AF_PACKET on lo delivers each packet outgoing and
// incoming; the filter drops the outgoing copy).
func TestRecordMainLoopback(t *testing.T) {
	testenv.RequirePriv(t, "AF_PACKET capture")
	srv := startServer(t, edge.Config{Auth: edge.AuthAnonymous})
	port := srv.Addr().(*net.TCPAddr).Port
	out := filepath.Join(t.TempDir(), "lo.pcap")
	const count = 40
	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		var o, e bytes.Buffer
		code := RecordMain([]string{"--iface", "lo", "--port", fmt.Sprint(port), "--seconds", "20",
			"--count", fmt.Sprint(count), "--out", out}, &o, &e)
		done <- result{code, o.String(), e.String()}
	}()
	var res result
	deadline := time.Now().Add(20 * time.Second)
loop:
	for i := 0; ; i++ {
		select {
		case res = <-done:
			break loop
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("record did not see enough packets")
		}
		c, err := net.DialTimeout("tcp", srv.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{CleanSession: true, ClientID: []byte(fmt.Sprintf("rec%04d", i))}))
		io.ReadFull(c, make([]byte, 4)) // CONNACK
		c.Write(mqtt.AppendDisconnect(nil))
		io.Copy(io.Discard, c) // until the server closes
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	if res.code != 0 || !strings.HasPrefix(res.stdout, fmt.Sprintf("recorded %d packets", count)) || res.stderr != "" {
		t.Fatalf("exit %d stdout %q stderr %q", res.code, res.stdout, res.stderr)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("capture file %v mode %v, want 0600", err, fi.Mode())
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet || r.Snaplen() != Snaplen {
		t.Errorf("link type %v snaplen %d", r.LinkType(), r.Snaplen())
	}
	seen := map[string]int{}
	n := 0
	for {
		data, _, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
		pkt := gopacket.NewPacket(data, layers.LinkTypeEthernet, gopacket.Default)
		tcp, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok || (int(tcp.SrcPort) != port && int(tcp.DstPort) != port) {
			t.Errorf("packet %d is not TCP on port %d: %v", n, port, pkt)
		}
		if first, dup := seen[string(data)]; dup {
			t.Errorf("packet %d repeats packet %d", n, first)
		}
		seen[string(data)] = n
	}
	if n != count {
		t.Errorf("file has %d packets, want %d", n, count)
	}
}
