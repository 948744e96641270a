//go:build !linux

package bench

import "syscall"

func workerAttr() *syscall.SysProcAttr { return nil }
