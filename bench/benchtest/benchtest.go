package benchtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/testenv"
)

// freePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// MosquittoConf writes a mosquitto configuration with the fair settings of
// DESIGN.md for a loopback listener on port and returns its path.
func MosquittoConf(t testing.TB, port int) string {
	t.Helper()
	conf := fmt.Sprintf(`listener %d 127.0.0.1
allow_anonymous true
max_connections -1
set_tcp_nodelay true
persistence false
max_queued_messages 100000
max_inflight_messages 0
log_dest none
`, port)
	cfg := filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// StartMosquitto starts mosquitto with the fair configuration of DESIGN.md
// on a free loopback port and stops it when the test ends.
func StartMosquitto(t testing.TB) (addr string, pid int) {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	testenv.Require(t, err == nil, "mosquitto not installed (apt-get install mosquitto)")
	port := FreePort(t)
	dir := t.TempDir()
	cfg := MosquittoConf(t, port)
	cmd := exec.Command(bin, "-c", cfg)
	out, _ := os.Create(filepath.Join(dir, "mosquitto.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		out.Close()
	})
	addr = "127.0.0.1:" + strconv.Itoa(port)
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp4", addr); err == nil {
			c.Close()
			return addr, cmd.Process.Pid
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "mosquitto.log"))
	t.Fatalf("mosquitto did not listen on %s: %s", addr, log)
	return "", 0
}

var (
	edgedOnce sync.Once
	edgedBin  string
	edgedErr  error
)

// buildEdged builds ./cmd/edged once per test process.
func buildEdged() (string, error) {
	edgedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "edgebench-edged-")
		if err != nil {
			edgedErr = err
			return
		}
		edgedBin = filepath.Join(dir, "edged")
		out, err := exec.Command("go", "build", "-o", edgedBin, "github.com/edgedhq/edged/cmd/edged").CombinedOutput()
		if err != nil {
			edgedErr = fmt.Errorf("build edged: %v: %s", err, out)
		}
	})
	return edgedBin, edgedErr
}

// StartEdged builds and starts edged on a free loopback port (anonymous
// loopback clients are admitted: client id = user id) with its admin
// endpoint on another free port, and stops it when the test ends. admin is
// the URL of GET /stats.
func StartEdged(t testing.TB) (addr string, pid int, admin string) {
	t.Helper()
	return StartEdgedWith(t, "")
}

// StartEdgedTLS is StartEdged with a TLS listener (the certificate files
// of testenv.MakeTLSFiles).
func StartEdgedTLS(t testing.TB, f *testenv.TLSFiles) (addr string, pid int, admin string) {
	t.Helper()
	return StartEdgedWith(t, "tls://", "--tls-cert", f.ECDSACert, "--tls-key", f.ECDSAKey)
}

// StartEdgedWith starts edged listening on scheme+addr with more flags.
func StartEdgedWith(t testing.TB, scheme string, flags ...string) (addr string, pid int, admin string) {
	t.Helper()
	bin, err := buildEdged()
	testenv.Require(t, err == nil, fmt.Sprintf("edged does not build: %v", err))
	addr = "127.0.0.1:" + strconv.Itoa(FreePort(t))
	adminAddr := "127.0.0.1:" + strconv.Itoa(FreePort(t))
	dir := t.TempDir()
	out, _ := os.Create(filepath.Join(dir, "edged.log"))
	cmd := exec.Command(bin, append([]string{"--listen", scheme + addr, "--admin", adminAddr, "--log-level", "warn", "--in-memory"}, flags...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start edged: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		out.Close()
	})
	// Both: the client listener is bound (and a dial completes in its
	// backlog) before the admin listener is.
	up := func(a string) bool {
		c, err := net.Dial("tcp4", a)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	for i := 0; i < 100; i++ {
		if up(addr) && up(adminAddr) {
			return addr, cmd.Process.Pid, "http://" + adminAddr + "/stats"
		}
		time.Sleep(50 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "edged.log"))
	t.Fatalf("edged did not listen on %s: %s", addr, log)
	return "", 0, ""
}
