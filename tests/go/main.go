// Command akfak-clients runs one Go Kafka client (franz-go with kadm, Sarama, kafka-go) through
// one scenario and prints what it did as JSON lines, for tests/test_go_clients.py:
//
//	akfak-clients CLIENT COMMAND key=value...
//
// CLIENT is franz, sarama or kafkago; produce and consume take comma-separated topics. Every client knows admin, produce, consume, member and
// groups; franz also knows cluster and txn, sarama txn. Each program is small and dumb: the
// test decides what is right. A failure prints {"kind":"error",...} and exits 1.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type args map[string]string

func (a args) str(key, def string) string {
	if v, ok := a[key]; ok {
		return v
	}
	return def
}

func (a args) num(key string, def int) int {
	v, ok := a[key]
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		fail("argument %s=%q is not a number", key, v)
	}
	return n
}

func (a args) must(key string) string {
	v, ok := a[key]
	if !ok {
		fail("missing argument %s=", key)
	}
	return v
}

// topics parses topics=name:partitions,name:partitions.
func (a args) topics() map[string]int {
	out := map[string]int{}
	for _, spec := range strings.Split(a.must("topics"), ",") {
		name, count, _ := strings.Cut(spec, ":")
		n, err := strconv.Atoi(count)
		if err != nil {
			fail("topic spec %q is not name:partitions", spec)
		}
		out[name] = n
	}
	return out
}

var outMu sync.Mutex

// emit prints one JSON line {"kind": kind, ...fields}.
func emit(kind string, fields map[string]any) {
	line := map[string]any{"kind": kind}
	for k, v := range fields {
		line[k] = v
	}
	data, err := json.Marshal(line)
	if err != nil {
		panic(err)
	}
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(data, '\n'))
}

func fail(format string, a ...any) {
	emit("error", map[string]any{"message": fmt.Sprintf(format, a...)})
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

// Key, Value and Header of record i: the values mix repeated text (so that codecs compress) with
// every byte value; tests/test_go_clients.py computes the same.
func Key(i int) []byte { return []byte(fmt.Sprintf("key-%d", i)) }

func Value(i int) []byte {
	v := []byte(strings.Repeat(fmt.Sprintf("record-%d ", i), 8))
	for j := 0; j < 64; j++ {
		v = append(v, byte((i+j*5)%256))
	}
	return v
}

func Header(i int) []byte { return []byte(strconv.Itoa(i)) }

// record prints a consumed record (encoding/json writes the value as base64).
func record(topic string, partition int32, offset int64, key, value []byte, headers map[string]string, member string) {
	emit("record", map[string]any{"topic": topic, "partition": partition, "offset": offset,
		"key": string(key), "value": value, "headers": headers, "member": member})
}

func sortedInts(m map[int32]bool) []int32 {
	out := make([]int32, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// stopContext is cancelled on SIGTERM or SIGINT: a group member then commits and leaves.
func stopContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		cancel()
	}()
	return ctx
}

func timeoutContext(a args) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Duration(a.num("timeout-ms", 60000))*time.Millisecond)
}

var clients = map[string]map[string]func(args){
	"franz":   franzCommands,
	"sarama":  saramaCommands,
	"kafkago": kafkagoCommands,
}

func main() {
	if len(os.Args) < 3 {
		fail("usage: akfak-clients CLIENT COMMAND key=value...")
	}
	commands, ok := clients[os.Args[1]]
	if !ok {
		fail("unknown client %q", os.Args[1])
	}
	command, ok := commands[os.Args[2]]
	if !ok {
		fail("client %s has no command %q", os.Args[1], os.Args[2])
	}
	a := args{}
	for _, arg := range os.Args[3:] {
		k, v, found := strings.Cut(arg, "=")
		if !found {
			fail("argument %q is not key=value", arg)
		}
		a[k] = v
	}
	if os.Args[2] == "produce" { // topic=a,b codec=x,y: a with x, then b with y
		topics, codecs := strings.Split(a.must("topic"), ","), strings.Split(a.str("codec", "none"), ",")
		for i, topic := range topics {
			one := args{}
			for k, v := range a {
				one[k] = v
			}
			one["topic"], one["codec"] = topic, codecs[min(i, len(codecs)-1)]
			command(one)
		}
	} else {
		command(a)
	}
	emit("done", nil)
}
