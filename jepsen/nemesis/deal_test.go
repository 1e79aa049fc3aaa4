package nemesis

import (
	"fmt"
	"slices"
	"testing"

	"github.com/seqd/seqd/jepsen/cluster"
)

func nodes(prefix string, k int) []*cluster.Node {
	var out []*cluster.Node
	for i := range k {
		out = append(out, &cluster.Node{ID: fmt.Sprintf("%s%d", prefix, i+1)})
	}
	return out
}

// draws deals n nodes of kill:store from eligible, then n targets of kill.
func draws(seed uint64, eligible []*cluster.Node, n int) (got, targets []string) {
	d := newDealer(seed, 1)
	for range n {
		got = append(got, d.node("kill:store", eligible).ID)
		targets = append(targets, d.deal("kill", Kinds["kill"]))
	}
	return got, targets
}

// Over N draws of one kind with K eligible targets, each round of K draws
// hits every target once: a short run of kill:store hits each replica
// instead of one three times, and kill:leader+allocsvr both targets. The
// same seed deals the same sequence.
func TestDealerHitsEveryTargetEachRound(t *testing.T) {
	const rounds = 8
	for _, k := range []int{2, 3, 5} {
		eligible := nodes("s1-r", k)
		for seed := uint64(1); seed <= 20; seed++ {
			got, targets := draws(seed, eligible, rounds*len(Kinds["kill"]))
			for _, c := range []struct {
				what string
				seq  []string
				k    int
			}{{"kill:store nodes", got[:rounds*k], k}, {"kill targets", targets, len(Kinds["kill"])}} {
				for r := range rounds {
					round := c.seq[r*c.k : (r+1)*c.k]
					if hit := slices.Compact(slices.Sorted(slices.Values(round))); len(hit) != c.k {
						t.Fatalf("k=%d seed %d: %s: round %d hits %v, not all %d; dealt %v", k, seed, c.what, r, round, c.k, c.seq)
					}
				}
			}
			again, againTargets := draws(seed, eligible, rounds*len(Kinds["kill"]))
			if !slices.Equal(got, again) || !slices.Equal(targets, againTargets) {
				t.Fatalf("k=%d seed %d: dealt %v %v, then %v %v", k, seed, got, targets, again, againTargets)
			}
			if other, _ := draws(seed+100, eligible, rounds*len(Kinds["kill"])); slices.Equal(got, other) {
				t.Fatalf("k=%d: seeds %d and %d dealt the same %v", k, seed, seed+100, got)
			}
		}
	}
}

// A node not eligible when its card comes up (it is down) keeps its turn
// in the round and is dealt once eligible again.
func TestDealerKeepsTheTurnOfANodeDown(t *testing.T) {
	all := nodes("s1-r", 3)
	for seed := uint64(1); seed <= 20; seed++ {
		d := newDealer(seed, 1)
		first := d.node("kill:store", all)
		left := slices.DeleteFunc(slices.Clone(all), func(n *cluster.Node) bool { return n == first })
		down := left[0]
		up := slices.DeleteFunc(slices.Clone(all), func(n *cluster.Node) bool { return n == down })
		if n := d.node("kill:store", up); n != left[1] {
			t.Fatalf("seed %d: with %s dealt and %s down, dealt %s; want %s", seed, first.ID, down.ID, n.ID, left[1].ID)
		}
		if n := d.node("kill:store", all); n != down {
			t.Fatalf("seed %d: %s is back up and not yet dealt this round, but %s was dealt", seed, down.ID, n.ID)
		}
	}
}
