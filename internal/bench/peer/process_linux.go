package peer

import "syscall"

// sysProcAttr keeps a terminal's Ctrl-C away from the child (seqbench
// stops it in order) and kills the child if seqbench itself dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
