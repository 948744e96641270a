package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/edgedhq/edged/edge"
	"github.com/edgedhq/edged/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestHelpGolden(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, &errb, nil); code != 0 {
		t.Fatalf("--help exited %d: %s", code, errb.String())
	}
	testenv.Golden(t, filepath.Join("testdata", "help.golden"), out.Bytes(), *update)
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("tooshort\n"), 0o600)
	badcfg := filepath.Join(dir, "bad.conf")
	os.WriteFile(badcfg, []byte("listen=127.0.0.1:0\nno-such-key=1\n"), 0o600)
	badval := filepath.Join(dir, "badval.conf")
	os.WriteFile(badval, []byte("# limits\ninflight=lots\n"), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown flag", []string{"--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"bad value", []string{"--inflight", "many"}, 2, `--inflight "many": want a whole number, e.g. 32`},
		{"bad duration", []string{"--handshake-timeout", "5"}, 2, `--handshake-timeout "5": want a duration`},
		{"bad config value", []string{"--config", badval}, 2, "badval.conf:2: inflight=lots: want a whole number, e.g. 32"},
		{"stray argument", []string{"serve"}, 2, "unexpected argument \"serve\""},
		{"public without secret", []string{"--listen", "0.0.0.0:0"}, 2, "clients need tokens off loopback"},
		{"short secret", []string{"--secret-file", short}, 2, "shorter than 16 bytes"},
		{"missing secret file", []string{"--secret-file", filepath.Join(dir, "none")}, 2, "read secret file"},
		{"bad config key", []string{"--config", badcfg}, 2, "unknown key \"no-such-key\""},
		{"bad limits", []string{"--listen", "127.0.0.1:0", "--admin", "off", "--inflight", "2000"}, 2, "in-flight window"},
		{"bad log level", []string{"--log-level", "loud"}, 2, "--log-level"},
		{"bad fsync mode", []string{"--fsync", "sometimes"}, 2, `parse --fsync: parse fsync mode "sometimes": want always, never or interval=<duration>`},
		{"bad fsync interval", []string{"--fsync", "interval=0s"}, 2, "want interval=<positive duration>"},
		{"empty data dir", []string{"--data-dir", ""}, 2, "parse --data-dir: empty"},
		{"store cap below 8 packets", []string{"--listen", "127.0.0.1:0", "--admin", "off", "--store-max-bytes", "1000000"}, 2, "store cap"},
		{"public admin without token", []string{"--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"}, 2, "serve admin on 0.0.0.0:0: the admin API is off loopback without authentication: give --admin-token-file"},
		{"admin on a host name without token", []string{"--listen", "127.0.0.1:0", "--admin", "admin.internal:9090"}, 2, "give --admin-token-file"},
		{"short admin token", []string{"--listen", "127.0.0.1:0", "--admin-token-file", short}, 2, "token shorter than 16 bytes"},
		{"tls listener without a certificate", []string{"--listen", "tls://127.0.0.1:0", "--admin", "off"}, 2, "a tls:// or wss:// listener needs --tls-cert and --tls-key"},
		{"wss listener without a certificate", []string{"--listen", "wss://127.0.0.1:0/mqtt", "--admin", "off"}, 2, "a tls:// or wss:// listener needs --tls-cert and --tls-key"},
		{"path on a tcp listener", []string{"--listen", "127.0.0.1:0/mqtt", "--admin", "off"}, 2, "a path is for ws:// and wss:// listeners only"},
		{"path on a tls listener", []string{"--listen", "tls://127.0.0.1:0/mqtt", "--admin", "off"}, 2, "a path is for ws:// and wss:// listeners only"},
		{"certificate without a tls listener", []string{"--listen", "127.0.0.1:0", "--admin", "off", "--tls-cert", "x"}, 2, "need a tls:// or wss:// --listen"},
		{"missing certificate file", []string{"--listen", "tls://127.0.0.1:0", "--admin", "off", "--tls-cert", filepath.Join(dir, "none"), "--tls-key", filepath.Join(dir, "none")}, 2, "load certificate"},
		{"missing admin token file", []string{"--listen", "127.0.0.1:0", "--admin-token-file", filepath.Join(dir, "none")}, 2, "read admin token file"},
		{"bad webhook", []string{"--listen", "127.0.0.1:0", "--push-webhook", "ftp://push.example/hook"}, 2, `parse --push-webhook "ftp://push.example/hook": want an http:// or https:// URL with a host`},
		{"webhook without host", []string{"--listen", "127.0.0.1:0", "--push-webhook", "http:///hook"}, 2, "--push-webhook"},
		{"zero push interval", []string{"--listen", "127.0.0.1:0", "--push-interval", "0s"}, 2, "parse --push-interval 0s: want a duration > 0"},
		{"negative sys interval", []string{"--listen", "127.0.0.1:0", "--sys-interval", "-1s"}, 2, "parse --sys-interval -1s: want a duration >= 0"},
		{"bad sys interval", []string{"--sys-interval", "often"}, 2, `--sys-interval "often": want a duration`},
		{"cluster flags without a node", []string{"--data-dir", dir, "--cluster-listen", "127.0.0.1:0"}, 2, "--cluster-listen, --cluster-peers and --nats need --node"},
		{"node without a cluster", []string{"--data-dir", dir, "--node", "n1"}, 2, "--node needs --cluster-listen or --nats"},
		{"bad node name", []string{"--data-dir", dir, "--node", "a.b", "--cluster-listen", "127.0.0.1:0"}, 2, `check node name "a.b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errb, nil)
			if code != tc.code || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, errb.String(), tc.code, tc.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--version"}, &out, &out, nil); code != 0 || !strings.HasPrefix(out.String(), "edged ") {
		t.Fatalf("--version: exit %d, %q", code, out.String())
	}
}

func TestConfigFileAndShutdown(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edged.conf")
	os.WriteFile(cfg, []byte("# test\nlisten = 127.0.0.1:0\nadmin=off\ninflight=7\nloops=1\n"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	ready := make(chan *edge.Server, 1)
	var errb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"--config", cfg, "--loops", "2", "--data-dir", t.TempDir()}, &bytes.Buffer{}, &errb, func(s *edge.Server) { ready <- s })
	}()
	select {
	case s := <-ready:
		if s.Addr().String() == edge.DefaultAddr {
			t.Fatalf("config file listen address ignored")
		}
	case code := <-done:
		t.Fatalf("exited %d: %s", code, errb.String())
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d after shutdown: %s", code, errb.String())
	}
	log := errb.String()
	for _, want := range []string{"edged started", "auth=loopback-anonymous", "loops=2", "anonymous clients are let in from loopback only", "edged stopped"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

// TestBinarySIGTERM builds edged and stops it with SIGTERM.
func TestBinarySIGTERM(t *testing.T) {
	cmd, errb := startBinary(t, buildEdged(t), "--listen", "127.0.0.1:0", "--admin", "off")
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("edged after SIGTERM: %v: %s", err, errb.String())
	}
	if !strings.Contains(errb.String(), "edged stopped") {
		t.Fatalf("no clean stop: %s", errb.String())
	}
}

func TestLimitFlags(t *testing.T) {
	var o options
	fs := newFlagSet(&o)
	if err := fs.Parse([]string{"--store-max-bytes", "1073741824", "--retained-max-bytes", "1048576",
		"--new-inbox-rate", "-1", "--new-inbox-burst", "5", "--inbox-expiry", "0"}); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := buildConfig(&o, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.StoreMaxBytes != 1<<30 || cfg.RetainedMaxBytes != 1<<20 || cfg.NewInboxRate != -1 || cfg.NewInboxBurst != 5 || cfg.InboxExpiry >= 0 {
		t.Fatalf("config %+v", cfg)
	}
	o = options{}
	fs = newFlagSet(&o)
	fs.Parse(nil)
	if cfg, _, _ = buildConfig(&o, io.Discard); cfg.StoreMaxBytes != 0 || cfg.InboxExpiry != edge.DefaultInboxExpiry || cfg.NewInboxRate != edge.DefaultNewInboxRate {
		t.Fatalf("defaults: store %d, expiry %v, rate %v; want 0 (from memory), 7 days, 100", cfg.StoreMaxBytes, cfg.InboxExpiry, cfg.NewInboxRate)
	}
	// Without --new-inbox-burst the burst is the library's default,
	// max(1000, rate): 0 here.
	o = options{}
	fs = newFlagSet(&o)
	fs.Parse([]string{"--new-inbox-rate", "5000"})
	if cfg, _, _ = buildConfig(&o, io.Discard); cfg.NewInboxRate != 5000 || cfg.NewInboxBurst != 0 {
		t.Fatalf("--new-inbox-rate 5000: rate %v, burst %v; want 5000 and 0 (max(1000, rate) in edge)", cfg.NewInboxRate, cfg.NewInboxBurst)
	}
}

// TestNoClusterNoNATS: without cluster flags edged runs no NATS (no
// JetStream directory, no cluster counters): a single node is unchanged.
func TestNoClusterNoNATS(t *testing.T) {
	dir := t.TempDir()
	s, _, stop := startRun(t, "--listen", "127.0.0.1:0", "--admin", "off", "--data-dir", dir)
	if st := s.Stats(); st.Cluster != nil {
		t.Errorf("cluster counters on a single node: %+v", st.Cluster)
	}
	stop()
	if _, err := os.Stat(filepath.Join(dir, "nats")); !os.IsNotExist(err) {
		t.Errorf("a single node made %s/nats: %v", dir, err)
	}
}
