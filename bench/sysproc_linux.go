package bench

import "syscall"

// workerAttr kills a worker when its parent dies (prctl(2) PR_SET_PDEATHSIG),
// so a crashed or killed edgebench never leaves load processes behind.
func workerAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: false}
}
