// Command edgebench is the capacity benchmark for MQTT edge hosts: it holds
// and drives many connections from a few worker processes and reports
// latency, throughput, errors and the server's memory and CPU.
package main

import (
	"os"

	"github.com/edgedhq/edged/bench"
)

func main() {
	bench.MaybeWorker() // worker processes are this binary re-executed
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
