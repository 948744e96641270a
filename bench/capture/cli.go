package capture

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Exit codes of RecordMain and ReplayMain (edgebench's).
const (
	exitOK    = 0
	exitFail  = 1 // the capture or the replay failed
	exitUsage = 2 // bad command line
)

const recordHelp = `Usage: edgebench record [flags]

capture the MQTT traffic of one TCP port into a pcap file.

Captures on --iface with an AF_PACKET socket (Linux, root or CAP_NET_RAW; no
libpcap) and a classic BPF filter attached to the socket that keeps TCP
segments from or to --port; on a loopback interface it also drops the
outgoing copy of each packet, so every packet is written once. Writes a pcap
file (Ethernet, nanosecond timestamps, snap length 262144, mode 0600: it
holds payloads) for --seconds or until --count packets or SIGINT.

Flags:
`

const replayHelp = `Usage: edgebench replay [flags]

re-enact the MQTT sessions of a capture against a server.

Reads a pcap or pcapng file (edgebench record's or tcpdump's), reassembles
each TCP connection to --port and decodes its MQTT 3.1.1 packets. Each
session is replayed on its recorded schedule divided by --speed, --scale
times with distinct identities: client ids and the user ids in u/, r/ and
p/ topics become r<copy>.<n>. padded with '_' to the recorded length; with
--scale above 1 other topics get the prefix r<copy>/ so that copies stay
apart. With --secret-file every CONNECT logs in with a token minted for that
secret; no recorded password is ever sent. PUBLISH payloads are replaced by
random bytes of the same size unless --keep-payloads. The replay
acknowledges what the server sends as a client does. The report compares
packets and bytes by type, sessions and messages received with the
recording, and says how late packets went out against the schedule. Exit
status 1 when a session failed to connect or broke.

Flags:
`

func usageErr(stderr io.Writer, verb string, err error) int {
	fmt.Fprintf(stderr, "edgebench %s: %v\nRun 'edgebench %s --help' for usage.\n", verb, err, verb)
	return exitUsage
}

// parse parses args into fs; it returns done with the exit code when the
// command should stop (help or a usage error).
func parse(fs *flag.FlagSet, help string, args []string, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			io.WriteString(stdout, help)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return exitOK, true
		}
		return usageErr(stderr, fs.Name(), err), true
	}
	if fs.NArg() > 0 {
		return usageErr(stderr, fs.Name(), fmt.Errorf("unexpected argument %q", fs.Arg(0))), true
	}
	return 0, false
}

// RecordMain is "edgebench record": args are the arguments after the verb.
// It returns the exit code: 0 ok, 1 the capture failed, 2 usage error.
func RecordMain(args []string, stdout, stderr io.Writer) int {
	var (
		o       RecordOptions
		seconds float64
	)
	fs := flag.NewFlagSet("record", flag.ContinueOnError)
	fs.StringVar(&o.Iface, "iface", "lo", "`interface` to capture on")
	fs.IntVar(&o.Port, "port", 1883, "server TCP `port` to capture")
	fs.Float64Var(&seconds, "seconds", 10, "capture time in `seconds`")
	fs.IntVar(&o.MaxPackets, "count", 0, "stop after `n` packets (0: no limit)")
	fs.StringVar(&o.Out, "out", "", "pcap `file` to write (required)")
	if code, done := parse(fs, recordHelp, args, stdout, stderr); done {
		return code
	}
	switch {
	case o.Out == "":
		return usageErr(stderr, "record", errors.New("--out is required"))
	case !(seconds > 0) || seconds > 1e6:
		return usageErr(stderr, "record", fmt.Errorf("--seconds %v must be in (0, 1e6]", seconds))
	case o.Port < 1 || o.Port > 65535:
		return usageErr(stderr, "record", fmt.Errorf("--port %d outside 1-65535", o.Port))
	case o.MaxPackets < 0:
		return usageErr(stderr, "record", fmt.Errorf("--count %d is negative", o.MaxPackets))
	}
	o.Duration = time.Duration(seconds * float64(time.Second))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st, err := Record(ctx, o)
	if err != nil {
		fmt.Fprintf(stderr, "edgebench record: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "recorded %d packets (%s) on %s port %d in %.1fs into %s\n",
		st.Packets, fmtBytes(st.Bytes), o.Iface, o.Port, st.Elapsed.Seconds(), o.Out)
	if st.Truncated > 0 {
		fmt.Fprintf(stderr, "edgebench record: warning: %d packets longer than %d bytes were truncated; replay will refuse them\n", st.Truncated, Snaplen)
	}
	if st.Dropped > 0 {
		fmt.Fprintf(stderr, "edgebench record: warning: the kernel dropped %d packets; replay will refuse the streams that lost bytes\n", st.Dropped)
	}
	return exitOK
}

// ReplayMain is "edgebench replay": args are the arguments after the verb.
// It returns the exit code: 0 ok, 1 the capture could not be read or a
// session failed, 2 usage error.
func ReplayMain(args []string, stdout, stderr io.Writer) int {
	var (
		o                ReplayOptions
		pcap, secretFile string
		port             int
		asJSON           bool
	)
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.StringVar(&pcap, "pcap", "", "capture `file` to replay, pcap or pcapng (required)")
	fs.StringVar(&o.Target, "target", "", "server `host:port` (required)")
	fs.IntVar(&port, "port", 1883, "server TCP `port` in the capture")
	fs.Float64Var(&o.Speed, "speed", 1, "replay speed: 2 is twice as fast as recorded")
	fs.IntVar(&o.Scale, "scale", 1, "replay `K` copies of every session, each with its own identities")
	fs.StringVar(&secretFile, "secret-file", "", "`file` holding the target's token secret; without it CONNECTs carry no password")
	fs.BoolVar(&o.KeepPayloads, "keep-payloads", false, "send the recorded payloads instead of random bytes of the same size")
	fs.DurationVar(&o.DialTimeout, "dial-timeout", 10*time.Second, "TCP connect limit")
	fs.DurationVar(&o.Drain, "drain", 2*time.Second, "how long a session waits for the server to close after DISCONNECT")
	fs.Uint64Var(&o.Seed, "seed", 0, "seed of the random payloads (0: random)")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON instead of text")
	if code, done := parse(fs, replayHelp, args, stdout, stderr); done {
		return code
	}
	if pcap == "" {
		return usageErr(stderr, "replay", errors.New("--pcap is required"))
	}
	if port < 1 || port > 65535 {
		return usageErr(stderr, "replay", fmt.Errorf("--port %d outside 1-65535", port))
	}
	if secretFile != "" {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			return usageErr(stderr, "replay", fmt.Errorf("read secret file: %w", err))
		}
		// As edged reads it: surrounding white space is not part of the secret.
		if o.Secret = []byte(strings.TrimSpace(string(b))); len(o.Secret) == 0 {
			return usageErr(stderr, "replay", fmt.Errorf("secret file %s is empty", secretFile))
		}
	}
	if err := o.setDefaults(); err != nil {
		return usageErr(stderr, "replay", errors.New(strings.TrimPrefix(err.Error(), "replay: ")))
	}
	w, err := Load(pcap, port)
	if err != nil {
		fmt.Fprintf(stderr, "edgebench replay: %s: %v\n", pcap, err)
		return exitFail
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Replay(ctx, w, o)
	if err != nil {
		fmt.Fprintf(stderr, "edgebench replay: %v\n", err)
		return exitFail
	}
	rep.Capture = pcap
	if asJSON {
		js, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "edgebench replay: encode report: %v\n", err)
			return exitFail
		}
		stdout.Write(append(js, '\n'))
	} else {
		io.WriteString(stdout, rep.Text())
	}
	if !rep.OK() {
		return exitFail
	}
	return exitOK
}
