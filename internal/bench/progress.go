package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Progress draws a live status line while a run lasts: a redrawn bar on a
// terminal, a plain line every few seconds otherwise (logs, CI).
type Progress struct {
	w     io.Writer
	tty   bool
	every time.Duration

	mu   sync.Mutex
	stop chan struct{}
	done chan struct{}
}

// NewProgress writes to w. A nil w shows nothing.
func NewProgress(w io.Writer) *Progress {
	p := &Progress{w: w, every: 2 * time.Second}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		p.tty, p.every = true, 200*time.Millisecond
	}
	return p
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Printf writes a message line, keeping it clear of the live line.
func (p *Progress) Printf(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\x1b[K")
	}
	fmt.Fprintf(p.w, format, args...)
}

// Start shows label's progress over total until Stop; sample returns the
// running totals.
func (p *Progress) Start(label string, total time.Duration, sample func() (ops, seqs, errs uint64)) {
	p.StartUnit(label, "seq", total, sample)
}

// StartUnit is Start with the rate shown in unit/s (seq, msg, event).
func (p *Progress) StartUnit(label, unit string, total time.Duration, sample func() (ops, seqs, errs uint64)) {
	if p == nil || p.w == nil {
		return
	}
	if unit == "" {
		unit = "seq"
	}
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go p.loop(label, unit, total, sample)
}

// Stop ends the live line.
func (p *Progress) Stop() {
	if p == nil || p.w == nil || p.stop == nil {
		return
	}
	close(p.stop)
	<-p.done
	p.stop = nil
}

func (p *Progress) loop(label, unit string, total time.Duration, sample func() (ops, seqs, errs uint64)) {
	defer close(p.done)
	start := time.Now()
	lastT, lastSeqs := start, uint64(0)
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			if p.tty {
				p.mu.Lock()
				fmt.Fprint(p.w, "\r\x1b[K")
				p.mu.Unlock()
			}
			return
		case now := <-t.C:
			_, seqs, errs := sample()
			rate := float64(seqs-lastSeqs) / now.Sub(lastT).Seconds()
			lastT, lastSeqs = now, seqs
			p.draw(label, unit, now.Sub(start), total, rate, errs)
		}
	}
}

func (p *Progress) draw(label, unit string, elapsed, total time.Duration, rate float64, errs uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	status := fmt.Sprintf("%5.1fs/%.1fs  %12s %s/s  errors %d",
		min(elapsed, total).Seconds(), total.Seconds(), FormatCount(rate), unit, errs)
	if !p.tty {
		fmt.Fprintf(p.w, "seqbench: %s %s\n", label, status)
		return
	}
	const width = 30
	filled := int(float64(width) * min(elapsed.Seconds()/total.Seconds(), 1))
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	fmt.Fprintf(p.w, "\r\x1b[K%-28s [%s] %s", label, bar, status)
}

// FormatCount renders n with thousands separators, rounded to an integer.
func FormatCount(n float64) string {
	s := fmt.Sprintf("%.0f", n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
