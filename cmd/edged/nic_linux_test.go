package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	steer "github.com/edgedhq/edged/ebpf"
	"github.com/edgedhq/edged/edge/mqtt"
	"github.com/edgedhq/edged/internal/testenv"
	"golang.org/x/sys/unix"
)

// nicClient is the client side of TestDualNICSteering, run by the test
// binary inside the client namespace: EDGED_NIC_CLIENT=DEV:N makes N MQTT
// connections to the service address through DEV (SO_BINDTODEVICE), each
// completing CONNECT/CONNACK, and prints how many were accepted.
func nicClient(spec string) int {
	dev, n, _ := strings.Cut(spec, ":")
	count, _ := strconv.Atoi(n)
	ok := 0
	for i := 0; i < count; i++ {
		d := net.Dialer{Timeout: 10 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = unix.BindToDevice(int(fd), dev) })
			return serr
		}}
		c, err := d.Dial("tcp", "198.18.0.1:1883")
		if err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write(mqtt.AppendConnect(nil, &mqtt.Connect{CleanSession: true, KeepAlive: 30, ClientID: []byte(fmt.Sprintf("%s-%d", dev, i))}))
		ack := make([]byte, 4)
		if _, err := io.ReadFull(c, ack); err == nil && bytes.Equal(ack, []byte{0x20, 2, 0, 0}) {
			ok++
		}
		c.Close()
	}
	fmt.Println("accepted", ok)
	return 0
}

func TestMain(m *testing.M) {
	if spec := os.Getenv("EDGED_NIC_CLIENT"); spec != "" {
		os.Exit(nicClient(spec))
	}
	code := m.Run()
	// A test that runs edged without --data-dir (or --in-memory) leaves
	// the default store in the package directory, shared between runs.
	if _, err := os.Stat("edged-data"); err == nil && code == 0 {
		fmt.Fprintln(os.Stderr, "a test ran edged without --data-dir: cmd/edged/edged-data was created")
		os.RemoveAll("edged-data")
		code = 1
	}
	os.Exit(code)
}

func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// TestDualNICSteering is the dual-NIC host of the steering issue, end to
// end: a server namespace with two veth links to a client namespace and the
// service address 198.18.0.1 on its lo. edged runs there with a public and
// a private NIC group on 198.18.0.1:1883; connections through each link
// must complete MQTT and be assigned to that NIC's group only, and with the
// private group absent, a connection through the private link must fail.
func TestDualNICSteering(t *testing.T) {
	testenv.RequirePriv(t, "network namespaces and SK_LOOKUP")
	_, err := exec.LookPath("ip")
	testenv.Require(t, err == nil, "ip (iproute2) not installed")
	bin := buildEdged(t)
	id := strconv.Itoa(os.Getpid() % 100000)
	srv, cli := "edsrv"+id, "edcli"+id
	ipCmd(t, "netns", "add", srv)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", srv).Run() })
	ipCmd(t, "netns", "add", cli)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", cli).Run() })
	for _, c := range [][]string{
		{"-n", srv, "link", "set", "lo", "up"},
		{"-n", cli, "link", "set", "lo", "up"},
		{"-n", srv, "link", "add", "pub-s", "type", "veth", "peer", "name", "pub-c", "netns", cli},
		{"-n", srv, "link", "add", "priv-s", "type", "veth", "peer", "name", "priv-c", "netns", cli},
		{"-n", srv, "addr", "add", "198.18.1.1/24", "dev", "pub-s"},
		{"-n", srv, "addr", "add", "198.18.2.1/24", "dev", "priv-s"},
		{"-n", srv, "addr", "add", "198.18.0.1/32", "dev", "lo"},
		{"-n", srv, "link", "set", "pub-s", "up"},
		{"-n", srv, "link", "set", "priv-s", "up"},
		{"-n", cli, "addr", "add", "198.18.1.2/24", "dev", "pub-c"},
		{"-n", cli, "addr", "add", "198.18.2.2/24", "dev", "priv-c"},
		{"-n", cli, "link", "set", "pub-c", "up"},
		{"-n", cli, "link", "set", "priv-c", "up"},
		{"-n", cli, "route", "add", "198.18.0.1/32", "via", "198.18.1.1", "dev", "pub-c"},
		{"-n", cli, "route", "add", "198.18.0.1/32", "via", "198.18.2.1", "dev", "priv-c", "metric", "10"},
	} {
		ipCmd(t, c...)
	}
	// A private bpffs for the pins: `ip netns exec` remounts /sys, hiding
	// /sys/fs/bpf, but a mount elsewhere stays visible.
	pins := t.TempDir()
	if err := unix.Mount("bpf", pins, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(pins, unix.MNT_DETACH) })

	dial := func(dev string, n int) int {
		t.Helper()
		cmd := exec.Command("ip", "netns", "exec", cli, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "EDGED_NIC_CLIENT="+dev+":"+strconv.Itoa(n))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client through %s: %v: %s", dev, err, out)
		}
		var got int
		fmt.Sscanf(strings.TrimSpace(string(out)), "accepted %d", &got)
		return got
	}
	start := func(listen string) (*exec.Cmd, *syncBuffer) {
		t.Helper()
		return startBinary(t, "ip", "netns", "exec", srv, bin, "--listen", listen, "--insecure", "--admin", "off",
			"--loops", "2", "--steering", "least", "--steer-pin", pins)
	}
	stop := func(cmd *exec.Cmd, errb *syncBuffer) {
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("edged: %v: %s", err, errb.String())
		}
	}

	cmd, errb := start("public=198.18.0.1:1883%pub-s,private=198.18.0.1:1883%priv-s")
	const perNIC = 30
	pub, priv := dial("pub-c", perNIC), dial("priv-c", perNIC)
	st, err := steer.ReadStatus(pins)
	if err != nil {
		t.Fatalf("read pins: %v\n%s", err, errb.String())
	}
	stop(cmd, errb)
	if pub != perNIC || priv != perNIC {
		t.Fatalf("MQTT sessions through pub-c %d, priv-c %d; want %d each:\n%s", pub, priv, perNIC, errb.String())
	}
	if len(st.Lookups) != 1 || len(st.Lookups[0].Groups) != 2 {
		t.Fatalf("pinned status: %+v", st)
	}
	assigned := map[string]uint64{}
	for _, g := range st.Lookups[0].Groups {
		assigned[g.Name] = g.Assigned
	}
	if assigned["public"] != perNIC || assigned["private"] != perNIC || st.Lookups[0].Dropped != 0 {
		t.Fatalf("SK_LOOKUP assigned %v (dropped %d), want %d to each NIC's group", assigned, st.Lookups[0].Dropped, perNIC)
	}
	if len(st.Groups) != 2 {
		t.Fatalf("want a reuseport steering group per NIC group, got %d", len(st.Groups))
	}

	// Only the public group: the private link reaches nothing.
	cmd, errb = start("public=198.18.0.1:1883%pub-s")
	pub, priv = dial("pub-c", 5), dial("priv-c", 3)
	stop(cmd, errb)
	if pub != 5 || priv != 0 {
		t.Fatalf("public-only edged: %d of 5 through pub-c, %d of 3 through priv-c (want 5 and 0)", pub, priv)
	}
}

// TestStalePinsPruned kills an edged (so it cannot unpin) and checks that
// the next edged removes the dead one's pins from the pin root.
func TestStalePinsPruned(t *testing.T) {
	testenv.RequirePriv(t, "attaching and pinning BPF programs")
	bin := buildEdged(t)
	pins := t.TempDir()
	if err := unix.Mount("bpf", pins, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(pins, unix.MNT_DETACH) })
	start := func() (*exec.Cmd, *syncBuffer) {
		return startBinary(t, bin, "--listen", "127.0.0.1:0", "--admin", "off", "--steering", "hash", "--steer-pin", pins)
	}
	first, _ := start()
	first.Process.Kill()
	first.Wait()
	if st, err := steer.ReadStatus(pins); err != nil || len(st.Groups) != 1 {
		t.Fatalf("after kill -9: %+v, %v; want the dead edged's group still pinned", st, err)
	}
	second, errb := start()
	defer func() { second.Process.Signal(syscall.SIGTERM); second.Wait() }()
	st, err := steer.ReadStatus(pins)
	if err != nil || len(st.Groups) != 1 || st.Groups[0].PID != second.Process.Pid {
		t.Fatalf("pins after the second start: %+v, %v; want only the live edged's group\n%s", st, err, errb.String())
	}
	if !strings.Contains(errb.String(), "removed pins of exited processes") {
		t.Fatalf("no log line for the pruned pins:\n%s", errb.String())
	}
}
