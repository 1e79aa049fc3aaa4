//go:build !seqdbugs

package bugs

import "net/http"

// Compiled reports whether this binary can plant bugs (built with seqdbugs).
const Compiled = false

// Enabled reports whether the named bug is active. Without the seqdbugs
// tag it is always false, and the branches it guards compile away.
func Enabled(string) bool { return false }

// RegisterHTTP adds the failpoint endpoints to mux; a no-op without the
// seqdbugs tag.
func RegisterHTTP(*http.ServeMux) {}
