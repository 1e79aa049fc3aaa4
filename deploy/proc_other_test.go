//go:build !linux

package deploy_test

import "os/exec"

// dieWithTest cannot tie cmd's life to the test binary's here; the test's
// cleanup kills it.
func dieWithTest(cmd *exec.Cmd) {}
