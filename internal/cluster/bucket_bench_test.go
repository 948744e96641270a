package cluster

import (
	"context"
	"encoding/base64"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkDirectoryBucketBytes: what a directory of 100,000 users costs
// the heap of a process embedding nats-server (one node, file storage,
// history 1, past the 10 s block cache expiry), stored as before the
// packing (a key per user, value the node, as edged_dir was) against packed
// into 4,096 keys (a shard's users and their nodes in one value, as
// edged_dirs is, shards.go, here in a text form of about the same size):
// JetStream keeps per-key state in memory
// (psim, fss), so the key count, not the bytes, is what a replica pays.
// A design input for issue #14, not a figure of the product. Run with
// -benchtime 1x.
func BenchmarkDirectoryBucketBytes(b *testing.B) {
	const users = 100_000
	for _, shards := range []int{0, 4096} {
		name := "key-per-user"
		if shards > 0 {
			name = fmt.Sprintf("%d-shards", shards)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				b.ReportMetric(bucketBytes(b, users, shards)/users, "heap-B/user")
			}
		})
	}
}

// bucketBytes puts users into a fresh bucket (shards 0: a key each) and
// returns the heap growth it left.
func bucketBytes(b *testing.B, users, shards int) float64 {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: b.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(10 * time.Second) {
		b.Fatal("nats-server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench_dir", History: 1})
	if err != nil {
		b.Fatal(err)
	}
	id := func(g int) string { return base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, "u%09d", g)) }
	h0 := heapInuse()
	if shards == 0 {
		for g := range users {
			if _, err := kv.PutString(ctx, id(g), "node3"); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		vals := make([]strings.Builder, shards)
		for g := range users {
			fmt.Fprintf(&vals[g%shards], "%s=3;", id(g))
		}
		for k := range vals {
			if _, err := kv.PutString(ctx, fmt.Sprintf("s%d", k), vals[k].String()); err != nil {
				b.Fatal(err)
			}
		}
		clear(vals) // the benchmark's own copy of the values is not the bucket's
	}
	time.Sleep(12 * time.Second) // past the stream's block cache expiry (10 s)
	return float64(int64(heapInuse()) - int64(h0))
}

func heapInuse() uint64 {
	runtime.GC()
	debug.FreeOSMemory()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
