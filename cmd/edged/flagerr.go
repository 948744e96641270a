package main

import (
	"flag"
	"fmt"
	"regexp"
	"time"
)

// The flag package reports a bad number as `invalid value "lots" for flag
// -inflight: parse error`, dropping what it wanted. explainFlagErr and
// explainValue say it instead.
var invalidValue = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for flag -([^:]+): `)

// explainFlagErr rewrites fs.Parse's error for a badly typed value into
// "--NAME "VALUE": want ..."; any other error is returned as it is.
func explainFlagErr(fs *flag.FlagSet, err error) error {
	m := invalidValue.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	if want := wantOf(fs.Lookup(m[2])); want != "" {
		return fmt.Errorf("--%s %q: want %s", m[2], m[1], want)
	}
	return err
}

// explainValue is fs.Set's error for key=value from a config file, with
// what the key wants where the flag package does not say.
func explainValue(fs *flag.FlagSet, key, value string, err error) error {
	if want := wantOf(fs.Lookup(key)); want != "" {
		return fmt.Errorf("%s=%s: want %s", key, value, want)
	}
	return fmt.Errorf("%s=%s: %w", key, value, err)
}

// wantOf describes the values flag f takes, "" when its own errors do.
func wantOf(f *flag.Flag) string {
	if f == nil {
		return ""
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case int, int64:
		return "a whole number, e.g. " + f.DefValue
	case uint, uint64:
		return "a whole number >= 0, e.g. " + f.DefValue
	case float64:
		return "a number, e.g. " + f.DefValue
	case bool:
		return "true or false"
	case time.Duration:
		return "a duration such as 500ms, 10s or 1m30s"
	}
	return ""
}
