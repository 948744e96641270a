package bench

import (
	"encoding/xml"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgedhq/edged/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fixedResult is a hand-made result, so rendering is tested without a run.
func fixedResult() *Result {
	r := &Result{Workload: "pairs", Target: "127.0.0.1:1883", Workers: 2, Elapsed: 14.2, Window: 10,
		Started:   time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC),
		PeakConns: 200, Attempts: 200, Connected: 200, Sent: 100000, Acked: 100000, Received: 99990,
		MsgsPerS: 9999, Errors: map[string]int64{"reset": 2, "timeout": 1},
		Latency: Percentiles{Count: 99990, P50: 450, P90: 900, P99: 2500, P999: 12000, Max: 40000},
		Connect: Percentiles{Count: 200, P50: 300, P99: 1500, Max: 2000},
		Server: &ServerFigures{PID: 42, PeakRSS: 20 << 20, Threads: 1, RSSBefore: 8 << 20, RSSAfter: 20 << 20,
			BytesPerConn: 62914.56, CPUSeconds: 2.5, CPUPerMillion: 25, MsgsPerCoreSec: 40000,
			Samples: []ServerSample{{T: 1, RSS: 8 << 20, CPU: 1}, {T: 2, RSS: 20 << 20, CPU: 1.5}, {T: 3, RSS: 20 << 20, CPU: 2.5}}},
		Capacity: &CapacityResult{Steps: []Step{{Conns: 200, Rate: 1000, MsgsPerS: 1000, P99us: 900, OK: true},
			{Conns: 200, Rate: 2000, MsgsPerS: 1500, P99us: 90000, Broke: "p99 90.0ms > 50ms"}}, Broke: "p99 90.0ms > 50ms"},
		Notes: []string{"an example note"},
	}
	r.Capacity.Knee = &r.Capacity.Steps[0]
	for i := 0; i < 5; i++ {
		phase := "measure"
		if i == 0 {
			phase = "ramp"
		}
		r.Seconds = append(r.Seconds, Second{T: float64(i + 1), Up: 200, Sent: int64(1000 * i), Received: int64(990 * i),
			P50us: int64(400 + 10*i), P99us: int64(2000 + 100*i), P999us: int64(9000 + 1000*i), Phase: phase,
			Connects: int64(200 / (i + 1)), ConnP50us: 300, ConnP99us: int64(1000 + 100*i)})
	}
	return r
}

func TestRenderGolden(t *testing.T) {
	r := fixedResult()
	c := &Comparison{Workload: "pairs", Rounds: 3, Targets: []Target{{Name: "mosquitto"}, {Name: "edged"}},
		Metrics: []Metric{
			{Name: "msgs_per_s", Better: "higher", Medians: []float64{40000, 48000}, Ratios: []float64{1, 1.2}},
			{Name: "server_bytes_per_conn", Better: "lower", Medians: []float64{0, 0}, Ratios: []float64{0, 0}},
			{Name: "errors", Better: "lower", Medians: []float64{0, 1}, Ratios: []float64{0, 0}},
		}}
	capRate, capP99 := capacitySVGs(r)
	for _, tc := range []struct {
		name string
		got  string
	}{
		{"report.txt.golden", Text(r)},
		{"compare.txt.golden", CompareText(c)},
		{"latency.svg.golden", latencySVG(r)},
		{"throughput.svg.golden", throughputSVG(r)},
		{"connections.svg.golden", connectionsSVG(r)},
		{"server.svg.golden", serverSVG(r)},
		{"server-cpu.svg.golden", serverCPUSVG(r)},
		{"connect.svg.golden", connectLatencySVG(r)},
		{"capacity-rate.svg.golden", capRate},
		{"capacity-p99.svg.golden", capP99},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testenv.Golden(t, filepath.Join("testdata", tc.name), []byte(tc.got), *update)
			if filepath.Ext(tc.name[:len(tc.name)-len(".golden")]) == ".svg" {
				if err := xml.Unmarshal([]byte(tc.got), new(struct{})); err != nil {
					t.Errorf("not well-formed XML: %v", err)
				}
			}
		})
	}
}

func TestWriteReport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir")
	if err := WriteReport(dir, fixedResult()); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"report.json", "report.txt", "latency.svg", "throughput.svg", "connections.svg", "server.svg"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	// A file where the directory should be: a clear error, not a panic.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	if err := WriteReport(filepath.Join(file, "sub"), fixedResult()); err == nil {
		t.Error("WriteReport under a regular file succeeded")
	}
}

// TestAxesEndWithTheData: an 11 s run spans 11 s on the x axis, not 20.
func TestAxesEndWithTheData(t *testing.T) {
	r := fixedResult()
	r.Seconds = r.Seconds[:0]
	for i := 1; i <= 11; i++ {
		r.Seconds = append(r.Seconds, Second{T: float64(i), Up: 10})
	}
	svg := connectionsSVG(r)
	if !strings.Contains(svg, ">10s</text>") || strings.Contains(svg, ">12s</text>") || strings.Contains(svg, ">20s</text>") {
		t.Fatalf("x axis of an 11 s run:\n%s", svg)
	}
}
