package store

import (
	"sync"
)

// hub wakes Subscribe streams when an applied entry touched their user.
// A wake-up carries no data: the stream reads its inbox from its last
// seq, so a missed or merged wake-up can never lose or repeat an event.
type hub struct {
	mu     sync.Mutex
	subs   map[uint64]map[chan struct{}]struct{}
	closed bool
}

func newHub() *hub { return &hub{subs: map[uint64]map[chan struct{}]struct{}{}} }

// subscribe returns a channel that receives after changes to user's inbox.
func (h *hub) subscribe(user uint64) chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(ch)
		return ch
	}
	if h.subs[user] == nil {
		h.subs[user] = map[chan struct{}]struct{}{}
	}
	h.subs[user][ch] = struct{}{}
	return ch
}

func (h *hub) unsubscribe(user uint64, ch chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[user], ch)
	if len(h.subs[user]) == 0 {
		delete(h.subs, user)
	}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// notify wakes the subscribers of users; nil users (after a snapshot
// restore) wakes everyone.
func (h *hub) notify(users, _ []uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if users == nil {
		for _, m := range h.subs {
			for ch := range m {
				wake(ch)
			}
		}
		return
	}
	for _, u := range users {
		for ch := range h.subs[u] {
			wake(ch)
		}
	}
}

// close ends every stream.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for u, m := range h.subs {
		for ch := range m {
			close(ch)
		}
		delete(h.subs, u)
	}
}
