// Package nodeid validates the ids operators give seqd nodes.
package nodeid

import (
	"fmt"
	"regexp"
)

var valid = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Validate returns an error saying what is wrong with id, or nil.
func Validate(id string) error {
	if id == "" {
		return fmt.Errorf("node id is empty; give every node a unique id such as \"alloc1\"")
	}
	if !valid.MatchString(id) {
		return fmt.Errorf("node id %q is not valid; use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}
