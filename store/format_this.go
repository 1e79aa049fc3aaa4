//go:build !seqdnext

package store

// buildFormat is the store format this build's replicas apply: this
// release's, storeFormat (a seqdnext build plays the next one,
// format_next.go).
const buildFormat = storeFormat
