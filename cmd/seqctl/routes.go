package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"

	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

func runRoutes(ctx context.Context, e *env, cmd *command, args []string) error {
	if err := flagsOnly(cmd, e, flag.NewFlagSet(cmd.name, flag.ContinueOnError), args); err != nil {
		return err
	}
	ctx, c, release, err := dialTimed(ctx, e)
	if err != nil {
		return err
	}
	defer release()
	t, err := c.table(ctx)
	if err != nil {
		return err
	}
	if e.json {
		return writeProto(e.stdout, t)
	}
	return printRoutes(e, t)
}

// routeGroup is one node's share of the table.
type routeGroup struct {
	id, addr, state string
	slots           []uint32
}

// groupSlots groups the table's slots by owner: every node in the table
// (even one that owns nothing), then owners the node list does not name,
// then the unassigned slots, so every slot appears exactly once.
func groupSlots(t *seqdv1.RoutingTable) (nodes []routeGroup, unassigned []uint32) {
	byID := map[string]int{}
	for _, n := range t.Nodes {
		byID[n.Id] = len(nodes)
		nodes = append(nodes, routeGroup{id: n.Id, addr: n.Addr, state: nodeState(n.State)})
	}
	for i, s := range t.Slots {
		if s.GetOwner() == "" {
			unassigned = append(unassigned, uint32(i))
			continue
		}
		j, ok := byID[s.Owner]
		if !ok {
			j = len(nodes)
			byID[s.Owner] = j
			nodes = append(nodes, routeGroup{id: s.Owner, addr: "?", state: "not in table"})
		}
		nodes[j].slots = append(nodes[j].slots, uint32(i))
	}
	slices.SortStableFunc(nodes, func(a, b routeGroup) int { return cmp.Compare(a.id, b.id) })
	return nodes, unassigned
}

func printRoutes(e *env, t *seqdv1.RoutingTable) error {
	tw := newTable(e.stdout)
	row(tw, "version", t.Version)
	row(tw, "cluster", orDash(t.ClusterId))
	if t.Dc != "" {
		row(tw, "dc", t.Dc)
	}
	row(tw, "section size", fmt.Sprintf("%d keys", t.SectionSize))
	row(tw, "slots", t.NumSlots)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout)

	nodes, unassigned := groupSlots(t)
	tw = newTable(e.stdout)
	row(tw, "NODE", "ADDR", "STATE", "SLOTS", "RANGES")
	for _, n := range nodes {
		row(tw, n.id, orDash(n.addr), n.state, len(n.slots), slotRanges(n.slots))
	}
	row(tw, "(unassigned)", "-", "-", len(unassigned), slotRanges(unassigned))
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(t.Shards) == 0 {
		return nil
	}
	fmt.Fprintln(e.stdout)
	tw = newTable(e.stdout)
	row(tw, "SHARD", "SECTIONS", "REPLICAS")
	for _, sh := range t.Shards {
		end := "end"
		if sh.EndSection != 0 {
			end = fmt.Sprint(sh.EndSection)
		}
		reps := make([]string, len(sh.Replicas))
		for i, r := range sh.Replicas {
			reps[i] = r.Id + "=" + r.Addr
		}
		row(tw, sh.Id, fmt.Sprintf("[%d, %s)", sh.FirstSection, end), strings.Join(reps, " "))
	}
	return tw.Flush()
}
