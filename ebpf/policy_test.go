package steer

import (
	"errors"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Policy
		err  error
	}{
		{"off", PolicyOff, nil},
		{"cpu", PolicyCPU, nil},
		{"hash", PolicyHash, nil},
		{"least", PolicyLeast, nil},
		{" LEAST ", PolicyLeast, nil},
		{"", PolicyOff, ErrUnknownPolicy},
		{"round-robin", PolicyOff, ErrUnknownPolicy},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePolicy(tc.in)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("ParsePolicy(%q) = %v, %v; want %v, %v", tc.in, got, err, tc.want, tc.err)
			}
			if err == nil && got.String() != tc.want.String() {
				t.Fatalf("String() = %q", got.String())
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	many := make([]int, MaxLoops+1)
	for i := range many {
		many[i] = i + 3
	}
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no listeners", Config{Policy: PolicyHash}},
		{"too many", Config{Policy: PolicyHash, Listeners: many}},
		{"bad policy", Config{Policy: Policy(9), Listeners: []int{3}}},
		{"cpu count", Config{Policy: PolicyCPU, Listeners: []int{3, 4}, LoopCPUs: []int{0}}},
		{"negative cpu", Config{Policy: PolicyCPU, Listeners: []int{3}, LoopCPUs: []int{-1}}},
		{"negative fd", Config{Policy: PolicyHash, Listeners: []int{-1}}},
		{"repeated fd", Config{Policy: PolicyHash, Listeners: []int{3, 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Attach(tc.cfg); !errors.Is(err, ErrBadConfig) {
				t.Fatalf("Attach: %v, want ErrBadConfig", err)
			}
		})
	}
}

func TestLookupConfigValidate(t *testing.T) {
	if _, err := AttachLookup(LookupConfig{Groups: []NICGroup{{Ifindex: 1, Listeners: []int{-2}}}}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("AttachLookup: %v, want ErrBadConfig", err)
	}
}
