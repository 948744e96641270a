// Package benchtest starts the servers that edgebench's tests measure, each
// on a free loopback port and stopped when the test ends: mosquitto with the
// fair configuration of DESIGN.md, and edged built from this module.
package benchtest
