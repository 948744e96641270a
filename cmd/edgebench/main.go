// Command edgebench is the capacity benchmark for MQTT edge hosts: it holds
// and drives many connections from a few worker processes and reports
// latency, throughput, errors and the server's memory and CPU.
//
// Examples (edgebench --help and edgebench <workload> --help say more):
//
//	# 15,000 connections, bytes per connection of the server
//	edgebench connect --target 127.0.0.1:1883 --conns 15000 --ramp 5000 \
//	    --src 127.0.0.2-127.0.0.9 --server-pid $(pidof mosquitto) --out /tmp/conn
//	# 1:1 messaging, 100 pairs, QoS 1, open loop at 10,000 msg/s, against edged
//	edgebench pairs --target 127.0.0.1:1884 --profile inbox --pairs 100 --qos 1 --rate 10000
//	# nothing lost while receivers drop and come back
//	edgebench offline --target 127.0.0.1:1883 --pairs 50 --rate 1000
//	# the knee: connections, then rate, until p99 > 50 ms
//	edgebench capacity --target 127.0.0.1:1883 --pairs 100 --qos 1 --max-conns 10000
//	# mosquitto against edged, 3 alternating rounds, medians and ratios
//	edgebench compare --workload pairs --qos 1 \
//	    --target mosquitto=127.0.0.1:1883,pid=$(pidof mosquitto) \
//	    --target edged=127.0.0.1:1884,profile=inbox --start 'edged=edged --listen 127.0.0.1:1884'
package main

import (
	"os"

	"github.com/edgedhq/edged/bench"
)

// version is set at link time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	bench.MaybeWorker() // worker processes are this binary re-executed
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
