package allocsvr

import "math/bits"

// counters maps a key's offset inside its section to how far its counter
// has moved past the section's floor. A key never used since the section
// was loaded has delta 0, so it starts at the floor without being stored.
//
// Memory stays under 16 bytes per used key plus a 64-byte minimum table per
// section: a sparse open-addressing table of packed 8-byte slots, kept
// between 53% and 80% full, until the section is dense enough that a plain
// array of 8-byte deltas is smaller.
type counters struct {
	size  uint32 // keys in the section
	shift uint   // delta bits in a packed slot; offset+1 sits above them
	table []uint64
	used  int
	dense []uint64 // once non-nil, the table is gone
}

const (
	minTable  = 8
	maxLoad   = 0.8
	growth    = 1.5
	fibonacci = 0x9E3779B97F4A7C15
)

func newCounters(size uint32) *counters {
	offBits := uint(bits.Len32(size)) // offset+1 <= size fits
	return &counters{size: size, shift: 64 - offBits}
}

func (c *counters) deltaMask() uint64 { return 1<<c.shift - 1 }

func (c *counters) home(off uint32, n int) int {
	hi, _ := bits.Mul64(uint64(off)*fibonacci, uint64(n))
	return int(hi)
}

// get returns the delta of the key at offset off.
func (c *counters) get(off uint32) uint64 {
	if c.dense != nil {
		return c.dense[off]
	}
	n := len(c.table)
	if n == 0 {
		return 0
	}
	tag := uint64(off) + 1
	for i := c.home(off, n); ; i++ {
		if i == n {
			i = 0
		}
		s := c.table[i]
		if s == 0 {
			return 0
		}
		if s>>c.shift == tag {
			return s & c.deltaMask()
		}
	}
}

// set stores the delta of the key at offset off.
func (c *counters) set(off uint32, delta uint64) {
	if c.dense != nil {
		c.dense[off] = delta
		return
	}
	if delta > c.deltaMask() {
		c.toDense()
		c.dense[off] = delta
		return
	}
	if float64(c.used+1) > maxLoad*float64(len(c.table)) {
		c.grow()
		if c.dense != nil {
			c.dense[off] = delta
			return
		}
	}
	c.put(off, delta)
}

// put writes into the sparse table, which has room.
func (c *counters) put(off uint32, delta uint64) {
	n := len(c.table)
	tag := uint64(off) + 1
	for i := c.home(off, n); ; i++ {
		if i == n {
			i = 0
		}
		s := c.table[i]
		if s == 0 {
			c.table[i] = tag<<c.shift | delta
			c.used++
			return
		}
		if s>>c.shift == tag {
			c.table[i] = tag<<c.shift | delta
			return
		}
	}
}

func (c *counters) grow() {
	n := int(float64(len(c.table)) * growth)
	if n < minTable {
		n = minTable
	}
	if n >= int(c.size) {
		c.toDense()
		return
	}
	old := c.table
	c.table = make([]uint64, n)
	c.used = 0
	for _, s := range old {
		if s != 0 {
			c.put(uint32(s>>c.shift-1), s&c.deltaMask())
		}
	}
}

func (c *counters) toDense() {
	d := make([]uint64, c.size)
	for _, s := range c.table {
		if s != 0 {
			d[s>>c.shift-1] = s & c.deltaMask()
		}
	}
	c.dense, c.table, c.used = d, nil, 0
}

// bytes returns the memory the structure holds, for metrics and tests.
func (c *counters) bytes() int {
	return 8*len(c.table) + 8*len(c.dense)
}
