package store

// SetCaughtUp sets whether this leader counts as having applied everything
// before its term (tests of refusals from a leader just elected).
func (s *Shard) SetCaughtUp(v bool) { s.caughtUp.Store(v) }
