package main

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// semAcquire is the Redis semaphore's acquire: drop expired holders, then add
// the holder with its expiry as score when fewer than the limit hold it.
// KEYS[1] the sorted set; ARGV limit, holder, ttl in ms. Returns 1 or 0.
var semAcquire = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  return 1
end
return 0
`)

// semTTL is the Redis holders' expiry, like slotbroker's default lease TTL.
const semTTL = 30 * time.Second

var holderSeq atomic.Uint64

// redisSem is a Redis semaphore of limit slots.
type redisSem struct {
	rdb   *redis.Client
	key   string
	limit int
}

// try acquires once; it returns the holder id, or "" when the semaphore is full.
func (s redisSem) try(ctx context.Context) (string, error) {
	h := strconv.FormatUint(holderSeq.Add(1), 36)
	n, err := semAcquire.Run(ctx, s.rdb, []string{s.key}, s.limit, h, semTTL.Milliseconds()).Int()
	if err != nil || n == 0 {
		return "", err
	}
	return h, nil
}

// acquire retries try after a jittered sleep of up to backoff until it holds
// a slot; it returns the holder and the number of attempts.
func (s redisSem) acquire(ctx context.Context, backoff time.Duration) (string, int, error) {
	for tries := 1; ; tries++ {
		h, err := s.try(ctx)
		if err != nil || h != "" {
			return h, tries, err
		}
		select {
		case <-ctx.Done():
			return "", tries, ctx.Err()
		case <-time.After(time.Duration(rand.Int64N(int64(backoff)))):
		}
	}
}

// release removes the holder.
func (s redisSem) release(ctx context.Context, h string) error {
	return s.rdb.ZRem(ctx, s.key, h).Err()
}
