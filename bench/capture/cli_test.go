package capture

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/edgedhq/edged/internal/testenv"
)

func runMain(verb string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	switch verb {
	case "record":
		code = RecordMain(args, &out, &errb)
	case "replay":
		code = ReplayMain(args, &out, &errb)
	}
	return code, out.String(), errb.String()
}

// TestHelpGolden: --help output is stable (testdata/*.help.golden; -update).
func TestHelpGolden(t *testing.T) {
	for _, verb := range []string{"record", "replay"} {
		t.Run(verb, func(t *testing.T) {
			code, out, errs := runMain(verb, "--help")
			if code != 0 || errs != "" {
				t.Fatalf("exit %d, stderr %q", code, errs)
			}
			testenv.Golden(t, filepath.Join("testdata", verb+".help.golden"), []byte(out), *update)
		})
	}
}

func TestUsageErrors(t *testing.T) {
	noSuchIfaceErr := `find interface "no-such-if0"`
	if runtime.GOOS != "linux" {
		noSuchIfaceErr = "not supported"
	}
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty-secret")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		verb string
		args []string
		code int
		want string // in stderr
	}{
		{"record", nil, 2, "edgebench record: --out is required"},
		{"record", []string{"--out", "x.pcap", "--seconds", "0"}, 2, "--seconds 0 must be in (0, 1e6]"},
		{"record", []string{"--out", "x.pcap", "--seconds", "NaN"}, 2, "--seconds NaN must be"},
		{"record", []string{"--out", "x.pcap", "--port", "70000"}, 2, "--port 70000 outside 1-65535"},
		{"record", []string{"--out", "x.pcap", "--count", "-1"}, 2, "--count -1 is negative"},
		{"record", []string{"--out", "x.pcap", "extra"}, 2, `unexpected argument "extra"`},
		{"record", []string{"--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"record", []string{"--iface", "no-such-if0", "--out", filepath.Join(dir, "x.pcap"), "--seconds", "1"}, 1, noSuchIfaceErr},
		{"replay", nil, 2, "edgebench replay: --pcap is required"},
		{"replay", []string{"--pcap", "x"}, 2, "no target"},
		{"replay", []string{"--pcap", "x", "--target", "nocolon"}, 2, `target "nocolon"`},
		{"replay", []string{"--pcap", "x", "--target", "127.0.0.1:1", "--speed", "0.001"}, 2, "speed 0.001 outside [0.01, 1000]"},
		{"replay", []string{"--pcap", "x", "--target", "127.0.0.1:1", "--speed", "-1"}, 2, "speed -1 outside"},
		{"replay", []string{"--pcap", "x", "--target", "127.0.0.1:1", "--scale", "-2"}, 2, "scale -2 outside"},
		{"replay", []string{"--pcap", "x", "--target", "127.0.0.1:1", "--port", "0"}, 2, "--port 0 outside"},
		{"replay", []string{"--pcap", "x", "--target", "127.0.0.1:1", "--secret-file", filepath.Join(dir, "nope")}, 2, "read secret file"},
		{"replay", []string{"--pcap", "x", "--target", "127.0.0.1:1", "--secret-file", empty}, 2, "is empty"},
		{"replay", []string{"--pcap", filepath.Join("testdata", "truncated-packet.pcap"), "--target", "127.0.0.1:1"}, 1,
			"read packet 7: file truncated: malformed capture"},
		{"replay", []string{"--pcap", filepath.Join(dir, "missing.pcap"), "--target", "127.0.0.1:1"}, 1, "open capture"},
	}
	for _, tt := range tests {
		t.Run(tt.verb+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errs := runMain(tt.verb, tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.want) {
				t.Fatalf("exit %d stderr %q, want exit %d and %q", code, errs, tt.code, tt.want)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if tt.code == 2 && !strings.Contains(errs, "Run 'edgebench "+tt.verb+" --help' for usage.") {
				t.Errorf("usage error without the help hint: %q", errs)
			}
		})
	}
}
