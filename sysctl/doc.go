// Package sysctl reads and writes kernel tunables as typed values under a root
// directory (default /proc/sys; tests point it at a temporary tree), and
// applies a set of changes as one transaction: every change is checked before
// the first write, a JSON state file records the old values before anything
// changes, a failure part-way rolls back what was already written, and
// Rollback restores the state file's values later.
//
// The same machinery serves other kernel file trees that hold one value per
// file (/sys/class/net/*/queues, /proc/irq/N/smp_affinity_list, transparent
// huge pages) and whole files such as a systemd drop-in: an FS is only a root
// plus the rule for turning a key into a path.
//
// Lifecycle: build Changes with FS.Change (reads the current value and
// validates the new one), call Check to learn every problem at once, Apply
// with a state file, Verify to read the kernel's values back, and Rollback
// with the same state file to undo. Nothing in this package caches values: a
// Change records the value it saw, and Apply refuses to write a key whose
// value moved since (ErrChanged).
package sysctl
