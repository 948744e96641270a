package capture

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files and crafted captures under testdata/")

// TestCraftedFilesUpToDate regenerates testdata/*.pcap with -update and
// otherwise checks that the files on disk are the crafted ones.
func TestCraftedFilesUpToDate(t *testing.T) {
	for name, crafted := range craftedFiles(t) {
		testenv.Golden(t, filepath.Join("testdata", name), crafted, *update)
	}
}

func TestLoadMalformed(t *testing.T) {
	tests := []struct {
		file string
		want string // the error must contain this text
		is   error
	}{
		{"empty.pcap", "read capture header: file has 0 bytes", ErrBadCapture},
		{"bad-magic.pcap", "magic 0x74686973 is neither pcap nor pcapng", ErrBadCapture},
		{"truncated-header.pcap", "read pcap header", ErrBadCapture},
		{"truncated-packet.pcap", "read packet 7: file truncated", ErrBadCapture},
		{"caplen.pcap", "read packet 3: malformed capture: capture length exceeds original packet length", ErrBadCapture},
		{"bad-ip.pcap", "read packet 4: malformed IP or TCP header", ErrBadCapture},
		{"snap-cut.pcap", "read packet 6: captured 200 of 1054 bytes", ErrBadCapture},
		{"bad-mqtt.pcap", "read packet 5: connection 198.18.0.1:40000 server to client: decode MQTT", mqtt.ErrRemainingLength},
		{"gap.pcap", "read packet 6: connection 198.18.0.1:40000 client to server: 1000 bytes before this packet are missing", ErrBadCapture},
		{"no-session.pcap", "none starting with CONNECT", ErrNoSessions},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			w, err := Load(filepath.Join("testdata", tt.file), 1883)
			if err == nil {
				t.Fatalf("Load = %d sessions, want error %q", len(w.Sessions), tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) || !errors.Is(err, tt.is) {
				t.Fatalf("Load error = %q, want it to contain %q and wrap %v", err, tt.want, tt.is)
			}
		})
	}
	if _, err := Load(filepath.Join("testdata", "no-such-file.pcap"), 1883); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing file) = %v, want ErrNotExist", err)
	}
	if _, err := Read(bytes.NewReader(pcapBytes(t, craftSession(t))), 0); !errors.Is(err, ErrBadOptions) {
		t.Errorf("Read(port 0) = %v, want ErrBadOptions", err)
	}
}

// TestLoadSynthetic checks reassembly and decoding on a crafted session in
// both file formats: a PUBLISH split over two segments plus a duplicate
// segment, and a packet of another protocol.
func TestLoadSynthetic(t *testing.T) {
	frames := craftSession(t)
	var twice []frame // as a plain AF_PACKET socket on lo sees them
	for _, f := range frames {
		twice = append(twice, f, f)
	}
	for _, format := range []string{"pcap", "pcapng", "pcap, every packet twice"} {
		t.Run(format, func(t *testing.T) {
			data, wantPackets, num := pcapBytes(t, frames), len(frames), 7
			switch format {
			case "pcapng":
				data = pcapngBytes(t, frames)
			case "pcap, every packet twice":
				data, wantPackets, num = pcapBytes(t, twice), len(twice), 13
			}
			w, err := Read(bytes.NewReader(data), 1883)
			if err != nil {
				t.Fatal(err)
			}
			if w.Packets != wantPackets || len(w.Sessions) != 1 || w.Skipped != 0 {
				t.Fatalf("packets %d sessions %d skipped %d, want %d 1 0", w.Packets, len(w.Sessions), w.Skipped, wantPackets)
			}
			s := w.Sessions[0]
			if s.Client != "198.18.0.1:40000" || s.ClientID != "alice" || s.Partial {
				t.Errorf("session %+v", s)
			}
			var sent, recv []string
			for _, st := range s.Sent {
				sent = append(sent, st.Type.String())
			}
			for _, st := range s.Recv {
				recv = append(recv, st.Type.String())
			}
			if got, want := strings.Join(sent, " "), "CONNECT PUBLISH DISCONNECT"; got != want {
				t.Errorf("sent %q, want %q", got, want)
			}
			if got, want := strings.Join(recv, " "), "CONNACK PUBACK PUBLISH"; got != want {
				t.Errorf("received %q, want %q", got, want)
			}
			pub := s.Sent[1]
			if pub.Size != len(craftPublish()) || pub.PayloadLen != 3000 || !bytes.Equal(pub.Raw, craftPublish()) {
				t.Errorf("PUBLISH size %d payload %d", pub.Size, pub.PayloadLen)
			}
			// The PUBLISH completes with packet 7 at 70 ms; the session
			// opens with packet 1 at 10 ms, which is the workload's start.
			if pub.PacketNum != num || pub.At != 60*time.Millisecond {
				t.Errorf("PUBLISH at packet %d, %v; want %d, 60ms", pub.PacketNum, pub.At, num)
			}
			if s.Open != 0 || s.End != 110*time.Millisecond || w.Duration != 110*time.Millisecond {
				t.Errorf("open %v end %v duration %v, want 0 110ms 110ms", s.Open, s.End, w.Duration)
			}
		})
	}
}

// TestLoadMidSession: a capture that starts after CONNECT is skipped with a
// count, one that starts after the SYN but before CONNECT is replayable.
func TestLoadMidSession(t *testing.T) {
	frames := craftSession(t)
	tests := []struct {
		name           string
		from           int // first frame kept (0-based)
		sessions, skip int
	}{
		{"after SYN", 1, 1, 0},
		{"after CONNECT", 5, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := Read(bytes.NewReader(pcapBytes(t, frames[tt.from:])), 1883)
			if tt.sessions == 0 {
				if !errors.Is(err, ErrNoSessions) {
					t.Fatalf("Read = %v, want ErrNoSessions", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(w.Sessions) != tt.sessions || w.Skipped != tt.skip {
				t.Fatalf("sessions %d skipped %d, want %d %d", len(w.Sessions), w.Skipped, tt.sessions, tt.skip)
			}
		})
	}
}

// TestLoadTcpdump reads captures that tcpdump 4.99 wrote (Debian 12) of
// mosquitto_sub and two mosquitto_pub runs against edged inside a network
// namespace: on lo (Ethernet; libpcap drops lo's outgoing copies itself)
// and on "any" (Linux cooked v2).
func TestLoadTcpdump(t *testing.T) {
	for _, file := range []string{"tcpdump-lo.pcap", "tcpdump-any-sll2.pcap"} {
		t.Run(file, func(t *testing.T) {
			w, err := Load(filepath.Join("testdata", file), 1883)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range w.Sessions {
				var types []string
				for _, st := range s.Sent {
					types = append(types, st.Type.String())
				}
				rm, _ := publishCount(s.Recv)
				got = append(got, fmt.Sprintf("%s: %s; received %d PUBLISH", s.ClientID, strings.Join(types, " "), rm))
			}
			want := []string{
				"fixsub01: CONNECT SUBSCRIBE DISCONNECT; received 2 PUBLISH",
				"fixpub01: CONNECT PUBLISH DISCONNECT; received 0 PUBLISH",
				"fixpub01: CONNECT PUBLISH DISCONNECT; received 0 PUBLISH",
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("sessions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func publishCount(steps []Step) (n int, bytes int) {
	for _, s := range steps {
		if s.Type == mqtt.TypePublish {
			n++
			bytes += s.PayloadLen
		}
	}
	return n, bytes
}
