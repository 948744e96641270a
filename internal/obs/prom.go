package obs

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newRegistry builds the private registry: the reporter's figures plus the
// Go runtime and process collectors.
func (r *Reporter) newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		(*figureCollector)(r))
	return reg
}

// figureCollector exports the last sample the Prometheus way: a counter as
// its running total (NAME_total), a level as its value, each named with its
// base unit (_bytes, _seconds, _ratio), one metric with a label where the
// figures differ only by loop or reason. Rates and windowed averages are
// not exported: Prometheus computes them itself (rate(), avg_over_time()).
// Figures the Go and process collectors already export (RSS, heap,
// goroutines, threads, GC) are left to them, under their standard names.
// The metric set grows as sources report new names, so it is an unchecked
// collector (Describe sends nothing).
type figureCollector Reporter

// promSkip lists the figures that /metrics leaves to another metric.
var promSkip = map[string]string{
	"rss":               "process_resident_memory_bytes",
	"threads":           "go_threads",
	"goroutines":        "go_goroutines",
	"heap":              "go_memstats_heap_alloc_bytes",
	"gc_cycles":         "go_gc_duration_seconds_count",
	"gc_pause":          "go_gc_duration_seconds",
	"gc_pause_max":      "go_gc_duration_seconds",
	"conns":             "edged_loop_connections{loop}",
	"loop_queued_bytes": "edged_loop_queued_bytes{loop}",
	"loop_queue_len":    "edged_loop_queue_messages{loop}",
	"alarms":            "edged_queue_alarm{kind,queue}",
	"cpu_user":          `edged_cpu_seconds_total{mode="user"}`,
	"cpu_system":        `edged_cpu_seconds_total{mode="system"}`,
}

// promRename names the figures whose generic name would mislead.
var promRename = map[string]string{
	"bytes_in":     "edged_received_bytes_total",
	"bytes_out":    "edged_sent_bytes_total",
	"ctx_switches": "edged_context_switches_total",
}

// promName returns the metric name of figure f, "" if /metrics leaves it to
// another metric. Host-wide TCP figures are named edged_host_tcp_... so they
// do not read as edged's own.
func promName(f Figure) string {
	if _, skip := promSkip[f.Name]; skip || strings.HasPrefix(f.Name, "closes_") || strings.HasPrefix(f.Name, "push_dropped_") || loopUtilFigure(f.Name) {
		return ""
	}
	if n, ok := promRename[f.Name]; ok {
		return n
	}
	name := "edged_" + f.Name
	if strings.HasPrefix(f.Name, "tcp_") {
		name = "edged_host_" + f.Name
	}
	switch f.Unit {
	case "B", "B/s":
		if !strings.HasSuffix(name, "_bytes") {
			name += "_bytes"
		}
	case "s":
		name += "_seconds"
	case "ratio":
		name += "_ratio"
	}
	if f.Counter {
		name += "_total"
	}
	return name
}

// loopUtilFigure reports whether name is a per-loop utilisation figure
// (loopN_util), exported as edged_loop_utilization{loop="N"}.
func loopUtilFigure(name string) bool {
	n, ok := strings.CutPrefix(name, "loop")
	if !ok {
		return false
	}
	n, ok = strings.CutSuffix(n, "_util")
	_, err := strconv.Atoi(n)
	return ok && err == nil
}

func promHelp(f Figure) string {
	h := "edged figure " + f.Name
	if f.Unit != "" {
		h += " (unit " + f.Unit + ")"
	}
	if strings.HasPrefix(f.Name, "tcp_") {
		h += "; host-wide, from /proc/net/snmp and /proc/net/netstat: every process's TCP, not edged's alone"
	}
	return h + "."
}

var (
	descLoopUtil  = prometheus.NewDesc("edged_loop_utilization", "Event loop busy time / (busy + waiting) over the last interval.", []string{"loop"}, nil)
	descLoopConns = prometheus.NewDesc("edged_loop_connections", "Live connections per event loop.", []string{"loop"}, nil)
	descLoopQB    = prometheus.NewDesc("edged_loop_queued_bytes", "Output not yet taken by the kernel, per loop.", []string{"loop"}, nil)
	descLoopXQ    = prometheus.NewDesc("edged_loop_queue_messages", "Cross-loop messages waiting, per loop.", []string{"loop"}, nil)
	descCPU       = prometheus.NewDesc("edged_cpu_seconds_total", "CPU time edged spent, by mode (getrusage).", []string{"mode"}, nil)
	descCloses    = prometheus.NewDesc("edged_closes_total", "Client connections closed, by reason.", []string{"reason"}, nil)
	descPushDrop  = prometheus.NewDesc("edged_push_dropped_total", "Push notifications dropped, by reason (queue_full, failed, rejected, shutdown).", []string{"reason"}, nil)
	descAlarm     = prometheus.NewDesc("edged_queue_alarm", "1 for each queue over its alarm threshold; its length is edged_queue_alarm_length.", []string{"kind", "queue"}, nil)
	descAlarmLen  = prometheus.NewDesc("edged_queue_alarm_length", "Length of each alarmed queue, in its kind's unit (bytes or messages).", []string{"kind", "queue"}, nil)
	descFired     = prometheus.NewDesc("edged_queue_alarms_fired_total", "Queue alarms fired since start.", nil, nil)
	descTopQ      = prometheus.NewDesc("edged_queue_top_length", "Length of the longest queues, in their kind's unit.", []string{"kind", "queue"}, nil)
	descCost      = prometheus.NewDesc("edged_obs_sample_seconds", "Wall time the last activity sample took.", nil, nil)
	descKnob      = prometheus.NewDesc("edged_knob", "Numeric value of each knob.", []string{"knob"}, nil)
)

// Describe implements prometheus.Collector (unchecked).
func (c *figureCollector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c *figureCollector) Collect(ch chan<- prometheus.Metric) {
	r := (*Reporter)(c)
	s := r.Snapshot(0)
	for _, f := range s.Figures {
		switch {
		case f.Name == "cpu_user" || f.Name == "cpu_system":
			ch <- prometheus.MustNewConstMetric(descCPU, prometheus.CounterValue, f.Total, strings.TrimPrefix(f.Name, "cpu_"))
			continue
		case strings.HasPrefix(f.Name, "closes_") && f.Counter:
			ch <- prometheus.MustNewConstMetric(descCloses, prometheus.CounterValue, f.Total, strings.TrimPrefix(f.Name, "closes_"))
			continue
		case strings.HasPrefix(f.Name, "push_dropped_") && f.Counter:
			ch <- prometheus.MustNewConstMetric(descPushDrop, prometheus.CounterValue, f.Total, strings.TrimPrefix(f.Name, "push_dropped_"))
			continue
		}
		name := promName(f)
		if name == "" {
			continue
		}
		if f.Counter {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, promHelp(f), nil, nil), prometheus.CounterValue, f.Total)
		} else {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, promHelp(f), nil, nil), prometheus.GaugeValue, f.Value)
		}
	}
	for _, l := range s.Loops {
		id := strconv.Itoa(l.Loop)
		ch <- prometheus.MustNewConstMetric(descLoopUtil, prometheus.GaugeValue, l.Util, id)
		ch <- prometheus.MustNewConstMetric(descLoopConns, prometheus.GaugeValue, float64(l.Conns), id)
		ch <- prometheus.MustNewConstMetric(descLoopQB, prometheus.GaugeValue, float64(l.QueuedBytes), id)
		ch <- prometheus.MustNewConstMetric(descLoopXQ, prometheus.GaugeValue, float64(l.QueueLen), id)
	}
	for _, a := range s.Alarms {
		ch <- prometheus.MustNewConstMetric(descAlarm, prometheus.GaugeValue, 1, a.Kind, a.Name)
		ch <- prometheus.MustNewConstMetric(descAlarmLen, prometheus.GaugeValue, float64(a.Len), a.Kind, a.Name)
	}
	for _, q := range s.TopQueues {
		ch <- prometheus.MustNewConstMetric(descTopQ, prometheus.GaugeValue, float64(q.Len), q.Kind, q.Name)
	}
	ch <- prometheus.MustNewConstMetric(descFired, prometheus.CounterValue, float64(s.AlarmsFired))
	ch <- prometheus.MustNewConstMetric(descCost, prometheus.GaugeValue, s.SampleCostUs/1e6)
	for _, k := range r.Knobs() {
		if v, err := strconv.ParseFloat(k.Value, 64); err == nil {
			ch <- prometheus.MustNewConstMetric(descKnob, prometheus.GaugeValue, v, k.Name)
		}
	}
}
