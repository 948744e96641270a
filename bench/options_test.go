package bench

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSrc(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		bad  bool
	}{
		{"", "", false},
		{"127.0.0.2", "127.0.0.2", false},
		{"127.0.0.2-127.0.0.4", "127.0.0.2 127.0.0.3 127.0.0.4", false},
		{"127.0.0.2,10.0.0.1-10.0.0.2", "127.0.0.2 10.0.0.1 10.0.0.2", false},
		{"127.0.0.255-127.0.1.0", "127.0.0.255 127.0.1.0", false},
		{"127.0.0.4-127.0.0.2", "", true},
		{"::1", "", true},
		{"host", "", true},
		{"10.0.0.0-10.2.0.0", "", true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSrc(tc.in)
			if tc.bad {
				if !errors.Is(err, ErrBadOption) {
					t.Fatalf("err %v, want ErrBadOption", err)
				}
				return
			}
			if err != nil || strings.Join(got, " ") != tc.want {
				t.Errorf("got %v %v, want %s", got, err, tc.want)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Target
		bad  bool
	}{
		{"m=127.0.0.1:1883", Target{Name: "m", Addr: "127.0.0.1:1883"}, false},
		{"e=127.0.0.1:1884,pid=42,admin=http://127.0.0.1:9/stats", Target{Name: "e", Addr: "127.0.0.1:1884", PID: 42, Admin: "http://127.0.0.1:9/stats"}, false},
		{"127.0.0.1:1883", Target{}, true},
		{"m=", Target{}, true},
		{"m=127.0.0.1:1,pid=x", Target{}, true},
		{"m=127.0.0.1:1,color=red", Target{}, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if tc.bad != (err != nil) || got != tc.want {
				t.Errorf("got %+v %v", got, err)
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"8GiB": 8 << 30, "512MiB": 512 << 20, "1000": 1000, "1.5KiB": 1536, "2MB": 2e6} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("%s: got %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1GiB"} {
		if _, err := ParseBytes(in); !errors.Is(err, ErrBadOption) {
			t.Errorf("%q: err %v, want ErrBadOption", in, err)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    string
		mod  func(*Options)
		want string
	}{
		{"defaults pairs", "pairs", func(*Options) {}, ""},
		{"unknown workload", "x", func(*Options) {}, "unknown workload"},
		{"qos 2", "pairs", func(o *Options) { o.QoS = 2 }, "qos 2"},
		{"small payload", "pairs", func(o *Options) { o.Size = 4 }, "size 4"},
		{"hostname target", "pairs", func(o *Options) { o.Target = "localhost:1883" }, "target"},
		{"fanout needs rate", "fanout", func(o *Options) { o.Rate = 0 }, "fanout needs --rate"},
		{"zero pairs", "pairs", func(o *Options) { o.Pairs = 0 }, "pairs 0"},
		{"capacity steps", "capacity", func(o *Options) { o.Capacity.MaxConns = 10 }, "capacity steps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Defaults()
			tc.mod(&o)
			err := o.Validate(tc.w)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrBadOption) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want ErrBadOption naming %q", err, tc.want)
			}
		})
	}
}
