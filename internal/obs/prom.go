package obs

import (
	"strconv"

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

// figureCollector exports the last sample. Its metric set grows as sources
// report new names, so it is an unchecked collector (Describe sends
// nothing). Per figure: edged_NAME (a level) or edged_NAME_per_second and
// edged_NAME_total (a counter); edged_..._avg{window="1s|10s|100s"}.
type figureCollector Reporter

var (
	descLoopUtil  = prometheus.NewDesc("edged_loop_utilization", "Event loop busy time / (busy + waiting) over the last interval.", []string{"loop"}, nil)
	descLoopConns = prometheus.NewDesc("edged_loop_connections", "Live connections per event loop.", []string{"loop"}, nil)
	descLoopQB    = prometheus.NewDesc("edged_loop_queued_bytes_by_loop", "Output not yet taken by the kernel, per loop.", []string{"loop"}, nil)
	descLoopXQ    = prometheus.NewDesc("edged_loop_queue_len_by_loop", "Cross-loop messages waiting, per loop.", []string{"loop"}, nil)
	descAlarm     = prometheus.NewDesc("edged_queue_alarm", "1 for each queue over its alarm threshold (value: its length in the label set's units is edged_queue_alarm_len).", []string{"kind", "queue"}, nil)
	descAlarmLen  = prometheus.NewDesc("edged_queue_alarm_len", "Length of each alarmed queue.", []string{"kind", "queue"}, nil)
	descFired     = prometheus.NewDesc("edged_queue_alarms_fired_total", "Queue alarms fired since start.", nil, nil)
	descTopQ      = prometheus.NewDesc("edged_queue_top_len", "Length of the longest queues.", []string{"kind", "queue"}, nil)
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
		base := "edged_" + f.Name
		help := "edged figure " + f.Name
		if f.Unit != "" {
			help += " (" + f.Unit + ")"
		}
		if f.Counter {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(base+"_total", "Total of "+help+".", nil, nil), prometheus.CounterValue, f.Total)
			base += "_per_second"
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(base, help+", last sample.", nil, nil), prometheus.GaugeValue, f.Value)
		d := prometheus.NewDesc(base+"_avg", help+", decaying average over the window.", []string{"window"}, nil)
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, f.Avg1, "1s")
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, f.Avg10, "10s")
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, f.Avg100, "100s")
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
