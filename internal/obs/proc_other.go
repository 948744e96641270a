//go:build !linux

package obs

// procReader on systems without /proc: CPU and context switches come from
// getrusage where it exists; RSS, threads and the TCP counters are not
// reported (their figures are absent from /stats and /metrics).
type procReader struct{}

func newProcReader() *procReader { return &procReader{} }

func (r *procReader) read(s *procSample) { readRusage(s) }
