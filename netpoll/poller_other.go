//go:build !linux && !darwin && !freebsd

package netpoll

import "time"

type poller struct{ parked bool }

func openPoller() (*poller, error) { return nil, ErrUnsupported }

func (p *poller) addListener(fd, group int) error               { return ErrUnsupported }
func (p *poller) addConn(fd int, cookie uint64) error           { return ErrUnsupported }
func (p *poller) armWrite(fd int, cookie uint64, on bool) error { return ErrUnsupported }
func (p *poller) wait(evs []event, timeoutMs int) (int, error)  { return 0, ErrUnsupported }
func (p *poller) wake() error                                   { return ErrUnsupported }
func (p *poller) drainWake()                                    {}
func (p *poller) close() error                                  { return nil }

func (p *poller) delListener(fd int) error { return ErrUnsupported }
func (p *poller) delConn(fd int) error     { return ErrUnsupported }

const canPark = false

func (p *poller) enablePark() error                                 { return ErrUnsupported }
func (p *poller) park(evs []event, deadline time.Time) (int, error) { return 0, ErrUnsupported }
func (p *poller) pending() bool                                     { return false }
