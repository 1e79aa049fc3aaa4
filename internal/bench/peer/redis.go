package peer

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Redis is a redis-server started for a comparison: AOF on (appendfsync
// everysec, Redis's recommended durable setting, unless asked otherwise),
// RDB snapshots off, no config file, data in a temporary directory.
type Redis struct {
	proc  *process
	addr  string
	fsync string
}

// RedisOptions shape a redis-server started by StartRedisWith.
type RedisOptions struct {
	// AppendFsync is the AOF fsync policy: "always" (fsync before
	// replying, Redis's only setting that loses no acknowledged write),
	// "everysec" (the default) or "no".
	AppendFsync string
}

// StartRedis starts redis-server on a free loopback port and waits until
// it answers PING. The error wraps ErrNotInstalled when the binary is
// missing.
func StartRedis(ctx context.Context) (*Redis, error) {
	return StartRedisWith(ctx, RedisOptions{})
}

// StartRedisWith is StartRedis with options.
func StartRedisWith(ctx context.Context, o RedisOptions) (*Redis, error) {
	switch o.AppendFsync {
	case "":
		o.AppendFsync = "everysec"
	case "always", "everysec", "no":
	default:
		return nil, fmt.Errorf("redis: appendfsync %q: use always, everysec or no", o.AppendFsync)
	}
	path, err := lookBinary("redis-server", "redis-server")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	proc, err := startProcess("redis-server", path,
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--dir", ".", "--appendonly", "yes", "--appendfsync", o.AppendFsync,
		"--save", "", "--daemonize", "no", "--logfile", "", "--loglevel", "warning",
	)
	if err != nil {
		return nil, err
	}
	r := &Redis{proc: proc, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), fsync: o.AppendFsync}
	err = proc.waitReady(ctx, 10*time.Second, func(ctx context.Context) error {
		c := NewRedisClient(r.addr, 1)
		defer c.Close()
		return c.Ping(ctx).Err()
	})
	if err != nil {
		proc.stop()
		return nil, err
	}
	return r, nil
}

// Addr is the server's host:port.
func (r *Redis) Addr() string { return r.addr }

// AppendFsync is the server's AOF fsync policy.
func (r *Redis) AppendFsync() string { return r.fsync }

// Err reports whether the server has exited, and why.
func (r *Redis) Err() error {
	select {
	case <-r.proc.exited:
		return r.proc.exitError()
	default:
		return nil
	}
}

// Close stops the server and removes its data.
func (r *Redis) Close() error {
	if err := r.proc.stop(); err != nil {
		return fmt.Errorf("redis-server cleanup: %w", err)
	}
	return nil
}

// NewRedisClient returns a go-redis client for addr with poolSize
// connections, so that many workers never wait for a connection.
func NewRedisClient(addr string, poolSize int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:         addr,
		PoolSize:     poolSize,
		MinIdleConns: poolSize,
		// Redis 7.0 knows neither CLIENT SETINFO nor maintenance
		// notifications; skip the handshake steps that would fail.
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}
