package nemesis

import (
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"

	"github.com/seqd/seqd/jepsen/cluster"
)

// Dealer makes the choices of one class of faults (foreground or
// background), all from the run's seed. Kinds, targets and nodes are dealt
// from shuffled decks, shuffled again when used up, so that each comes up
// once a round: a short run does not kill one store replica three times
// and another never. Other choices (timings, a partition's split, a clock
// rate) come from the embedded generator.
type Dealer struct {
	*rand.Rand
	seed   uint64
	stream uint64
	decks  map[string]*deck
}

// deck is what is left of one round, with its own generator: the order it
// deals in depends on the seed and its name only, not on how many other
// choices the cluster's replies (a failed injection, a node down) caused.
type deck struct {
	rng   *rand.Rand
	cards []string
}

// newDealer returns the dealer for the class numbered stream.
func newDealer(seed, stream uint64) *Dealer {
	return &Dealer{Rand: rand.New(rand.NewPCG(seed, stream)), seed: seed, stream: stream, decks: map[string]*deck{}}
}

// deal returns the next card of the deck named key that is among eligible,
// which must not be empty. A card not eligible now (its node is down)
// stays for a later deal of the round; once no card left is eligible, the
// deck is dealt again from every eligible card, shuffled.
func (d *Dealer) deal(key string, eligible []string) string {
	dk := d.decks[key]
	if dk == nil {
		h := fnv.New64a()
		fmt.Fprintf(h, "%d/%s", d.stream, key)
		dk = &deck{rng: rand.New(rand.NewPCG(d.seed, h.Sum64()))}
		d.decks[key] = dk
	}
	i := slices.IndexFunc(dk.cards, func(c string) bool { return slices.Contains(eligible, c) })
	if i < 0 {
		dk.cards = slices.Clone(eligible)
		dk.rng.Shuffle(len(dk.cards), func(i, j int) { dk.cards[i], dk.cards[j] = dk.cards[j], dk.cards[i] })
		i = 0
	}
	c := dk.cards[i]
	dk.cards = slices.Delete(dk.cards, i, i+1)
	return c
}

// node deals one of eligible (not empty) from the deck named key.
func (d *Dealer) node(key string, eligible []*cluster.Node) *cluster.Node {
	id := d.deal(key, ids(eligible))
	return eligible[slices.IndexFunc(eligible, func(n *cluster.Node) bool { return n.ID == id })]
}

// shuffled returns xs in a random order.
func (d *Dealer) shuffled(xs []string) []string {
	out := slices.Clone(xs)
	d.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
