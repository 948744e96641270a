// Package tuning holds edged's host tuning profiles as data and turns them
// into plans: tuning.Profile (settings, each with its reason and formula)
// -> Plan (the profile diffed against a host's files, line by line) ->
// Apply / Verify / Rollback (through package sysctl, with a JSON state file).
//
// A profile covers sysctls, RLIMIT_NOFILE and the Go runtime environment
// (carried to edged.service by a systemd drop-in), IRQ affinity and
// RPS/RFS/XPS per NIC queue, and transparent huge pages. Every file lives
// under a host root ("/" on the live host; a fake /proc and /sys tree in
// tests), so a plan never touches anything outside it. Plans read; only
// Apply and Rollback write.
package tuning
