package edge

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/wal"
)

// BenchmarkRecovery measures Start on a data dir holding 1,000,000 queued
// direct messages (64-byte payloads) across 100,000 inboxes, as the durable
// state issue asks (at most 3 s): once from the log alone, once from a
// snapshot. The messages are stored through storeDirect, the path a
// PUBLISH takes, without sockets. Run with -benchtime=1x.
func BenchmarkRecovery(b *testing.B) {
	const users, perUser = 100_000, 10
	for _, snap := range []bool{false, true} {
		name := "log"
		if snap {
			name = "snapshot"
		}
		b.Run(name, func(b *testing.B) {
			dir := b.TempDir()
			cfg := Config{Addr: "127.0.0.1:0", Loops: 1, Auth: AuthLoopbackAnonymous, DataDir: dir, Fsync: wal.SyncNever}
			s, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Start(); err != nil {
				b.Fatal(err)
			}
			ls := &loopState{}
			payload := make([]byte, 64)
			from := []byte("sender")
			for i := range perUser {
				mid := []byte("m" + strconv.Itoa(i))
				for u := range users {
					to := []byte("user" + strconv.Itoa(u))
					if r := s.storeDirect(ls, nil, 'm', to, from, nil, mid, payload); r != storeOK {
						b.Fatalf("store %s: %v", to, r)
					}
				}
				s.wal.Write()
			}
			if snap {
				if err := s.compact(); err != nil {
					b.Fatal(err)
				}
			}
			s.Close()
			var size int64
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if fi, err := os.Stat(filepath.Join(dir, e.Name())); err == nil {
					size += fi.Size()
				}
			}
			runtime.GC()
			b.ResetTimer()
			for b.Loop() {
				s, err := New(cfg)
				if err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				if err := s.Start(); err != nil {
					b.Fatal(err)
				}
				took := time.Since(t0)
				if n := s.InboxLen("user99999"); n != perUser {
					b.Fatalf("user99999 holds %d after recovery, want %d", n, perUser)
				}
				b.ReportMetric(took.Seconds(), "recovery_s")
				b.ReportMetric(float64(size)/(1<<20), "disk_MiB")
				s.Close()
			}
		})
	}
}
