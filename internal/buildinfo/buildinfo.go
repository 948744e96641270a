// Package buildinfo says which build a binary is: the version set at link
// time plus what the Go toolchain stamped into it (commit, commit time,
// whether the tree had uncommitted changes), so that `edged --version`
// names the commit a bug report is about.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// String returns "VERSION (commit REV[+dirty], DATE) GOVERSION GOOS/GOARCH";
// the commit part is left out when the binary carries no VCS stamp (go run,
// go test, or a build outside a git checkout: see `go help buildvcs`).
func String(version string) string {
	return format(version, read())
}

type stamp struct{ revision, time, modified string }

func read() stamp {
	var s stamp
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return s
	}
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			s.revision = kv.Value
		case "vcs.time":
			s.time = kv.Value
		case "vcs.modified":
			s.modified = kv.Value
		}
	}
	return s
}

func format(version string, s stamp) string {
	var b strings.Builder
	b.WriteString(version)
	if s.revision != "" {
		rev := s.revision
		if len(rev) > 12 {
			rev = rev[:12]
		}
		b.WriteString(" (commit " + rev)
		if s.modified == "true" {
			b.WriteString("+dirty")
		}
		if s.time != "" {
			b.WriteString(", " + s.time)
		}
		b.WriteString(")")
	}
	b.WriteString(" " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH)
	return b.String()
}
