package mqtt

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidTopicName(t *testing.T) {
	tests := []struct {
		topic string
		err   error
	}{
		{"a", nil},
		{"/", nil},
		{"a/b/c", nil},
		{"u/14155550123/m1", nil},
		{"$SYS/uptime", nil},
		{"a//b", nil},
		{"caf\u00e9/\U0001F600", nil},
		{" ", nil},
		{strings.Repeat("a", 65535), nil},
		{"", ErrEmptyTopic},
		{strings.Repeat("a", 65536), ErrTopicName},
		{"+", ErrTopicName},
		{"a/+", ErrTopicName},
		{"a/#", ErrTopicName},
		{"a#", ErrTopicName},
		{"a\x00b", ErrUTF8},
		{"a\xffb", ErrUTF8},
		{"\xed\xa0\x80", ErrUTF8},     // surrogate U+D800
		{"\xc0\x80", ErrUTF8},         // overlong NUL
		{"\xf4\x90\x80\x80", ErrUTF8}, // above U+10FFFF
		{"\xe2\x82", ErrUTF8},         // truncated
	}
	for _, tt := range tests {
		t.Run(trunc(tt.topic), func(t *testing.T) {
			if err := ValidTopicName(tt.topic); err != tt.err {
				t.Fatalf("ValidTopicName(string) = %v; want %v", err, tt.err)
			}
			if err := ValidTopicName([]byte(tt.topic)); err != tt.err {
				t.Fatalf("ValidTopicName([]byte) = %v; want %v", err, tt.err)
			}
		})
	}
}

func TestValidUTF8(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{"", true}, {"u/14155550123", true}, {"\u00e9\U0010FFFF", true},
		{"\x00", false}, {"\xff", false}, {strings.Repeat("a", 65536), false},
	}
	for _, tt := range tests {
		if got := ValidUTF8(tt.s); got != tt.want {
			t.Errorf("ValidUTF8(%q) = %v; want %v", trunc(tt.s), got, tt.want)
		}
	}
}

func trunc(s string) string {
	if len(s) > 20 {
		return s[:20] + "..."
	}
	return s
}

func TestValidTopicFilter(t *testing.T) {
	tests := []struct {
		filter string
		err    error
	}{
		{"a", nil},
		{"#", nil},
		{"+", nil},
		{"/", nil},
		{"a/#", nil},
		{"+/+", nil},
		{"/+", nil},
		{"+/tennis/#", nil},
		{"sport/+/player1", nil},
		{"a//#", nil},
		{"$SYS/#", nil},
		{"", ErrEmptyTopic},
		{"a#", ErrTopicFilter},
		{"#/a", ErrTopicFilter},
		{"a/#/b", ErrTopicFilter},
		{"a/b#", ErrTopicFilter},
		{"##", ErrTopicFilter},
		{"a+", ErrTopicFilter},
		{"+a", ErrTopicFilter},
		{"a/+b/c", ErrTopicFilter},
		{"++", ErrTopicFilter},
		{"+#", ErrTopicFilter},
		{"a\x00", ErrUTF8},
		{"\xff/#", ErrUTF8},
		{strings.Repeat("a", 65536), ErrTopicFilter},
	}
	for _, tt := range tests {
		t.Run(trunc(tt.filter), func(t *testing.T) {
			if err := ValidTopicFilter(tt.filter); err != tt.err {
				t.Fatalf("ValidTopicFilter = %v; want %v", err, tt.err)
			}
			if err := ValidTopicFilter([]byte(tt.filter)); err != tt.err {
				t.Fatalf("ValidTopicFilter([]byte) = %v; want %v", err, tt.err)
			}
		})
	}
}

func TestMatchTopic(t *testing.T) {
	// Examples from 3.1.1 sections 4.7.1.2, 4.7.1.3 and 4.7.2.
	tests := []struct {
		filter, topic string
		want          bool
	}{
		{"sport/tennis/player1/#", "sport/tennis/player1", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
		{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
		{"sport/#", "sport", true},
		{"sport/#", "sport/", true},
		{"#", "sport/tennis", true},
		{"#", "/", true},
		{"sport/tennis/+", "sport/tennis/player1", true},
		{"sport/tennis/+", "sport/tennis/player2", true},
		{"sport/tennis/+", "sport/tennis/player1/ranking", false},
		{"sport/+", "sport", false},
		{"sport/+", "sport/", true},
		{"+/+", "/finance", true},
		{"/+", "/finance", true},
		{"+", "/finance", false},
		{"+", "finance", true},
		{"+/tennis/#", "sport/tennis/x", true},
		{"+/tennis/#", "sport/tennis", true},
		{"+/tennis/#", "sport/golf", false},
		{"#", "$SYS/uptime", false},
		{"+/monitor/Clients", "$SYS/monitor/Clients", false},
		{"$SYS/#", "$SYS/monitor/Clients", true},
		{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
		{"a/b", "a/b", true},
		{"a/b", "a/bc", false},
		{"a/bc", "a/b", false},
		{"a/b", "a/b/", false},
		{"a/b/", "a/b", false},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
		{"A/b", "a/b", false},
		{"a", "", false},
		{"", "a", false},
		{"a/#", "b", false},
		{"a/b/#", "a", false},
	}
	for _, tt := range tests {
		t.Run(tt.filter+" "+tt.topic, func(t *testing.T) {
			if got := MatchTopic(tt.filter, tt.topic); got != tt.want {
				t.Fatalf("MatchTopic(%q, %q) = %v; want %v", tt.filter, tt.topic, got, tt.want)
			}
			if got := MatchTopic([]byte(tt.filter), []byte(tt.topic)); got != tt.want {
				t.Fatalf("MatchTopic([]byte) = %v; want %v", got, tt.want)
			}
		})
	}
}

// FuzzValidUTF8 checks the hand-written UTF-8 validator against unicode/utf8.
func FuzzValidUTF8(f *testing.F) {
	for _, s := range []string{"", "a", "\x00", "caf\u00e9", "\xed\xa0\x80", "\xc0\x80", "\xf4\x90\x80\x80", "\U0010FFFF", "\xe2\x82"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		want := utf8.Valid(s) && !strings.ContainsRune(string(s), 0)
		if got := validUTF8(s); got != want {
			t.Fatalf("validUTF8(%q) = %v; want %v", s, got, want)
		}
	})
}

// FuzzMatchTopic checks MatchTopic against a level-splitting reference
// implementation written straight from the spec text.
func FuzzMatchTopic(f *testing.F) {
	f.Add("a/+/#", "a/b/c")
	f.Add("#", "$SYS")
	f.Add("+/+", "/x")
	f.Add("a/#", "a")
	f.Fuzz(func(t *testing.T, filter, topic string) {
		got := MatchTopic(filter, topic)
		if ValidTopicFilter(filter) != nil || ValidTopicName(topic) != nil {
			return // unspecified result, but it must not panic
		}
		if want := refMatch(filter, topic); got != want {
			t.Fatalf("MatchTopic(%q, %q) = %v; reference says %v", filter, topic, got, want)
		}
	})
}

func refMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) {
			return false
		}
		if f != "+" && f != tl[i] {
			return false
		}
	}
	return len(fl) == len(tl)
}
