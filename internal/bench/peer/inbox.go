package peer

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// inboxLua is the per-user inbox teams build on Redis today. KEYS come in
// pairs, seq:<user> and inbox:<user>, one pair per copy of the message: for
// each pair it does INCR seq:<user> for the user's next seq, then XADD
// inbox:<user> <seq>-1 body <ARGV[1]>, so the stream entry id carries the
// inbox seq. One script call runs atomically: every copy gets its seq and
// is appended, or none is. It returns the seqs.
const inboxLua = `
local out = {}
for i = 1, #KEYS, 2 do
  local seq = redis.call('INCR', KEYS[i])
  redis.call('XADD', KEYS[i+1], seq .. '-1', 'body', ARGV[1])
  out[#out+1] = seq
end
return out
`

// Inbox appends messages to per-user Redis streams with inboxLua.
type Inbox struct {
	rdb    *redis.Client
	script *redis.Script
}

// NewInbox loads the script into the server behind rdb.
func NewInbox(ctx context.Context, rdb *redis.Client) (*Inbox, error) {
	s := redis.NewScript(inboxLua)
	if err := s.Load(ctx, rdb).Err(); err != nil {
		return nil, fmt.Errorf("redis: SCRIPT LOAD: %w", err)
	}
	return &Inbox{rdb: rdb, script: s}, nil
}

// Append gives body one seq in each user's inbox and appends it there, in
// one script call (EVALSHA). It returns the seqs, in the order of users.
func (in *Inbox) Append(ctx context.Context, body []byte, users ...uint64) ([]int64, error) {
	keys := make([]string, 0, 2*len(users))
	for _, u := range users {
		id := strconv.FormatUint(u, 10)
		keys = append(keys, "seq:"+id, "inbox:"+id)
	}
	return in.script.Run(ctx, in.rdb, keys, body).Int64Slice()
}
