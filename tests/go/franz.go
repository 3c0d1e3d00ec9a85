package main

// franz-go (kgo) and its admin client kadm.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var franzCommands = map[string]func(args){
	"admin":   franzAdmin,
	"create":  franzCreate,
	"produce": franzProduce,
	"consume": franzConsume,
	"member":  franzMember,
	"groups":  franzGroups,
	"cluster": franzCluster,
	"txn":     franzTxn,
	"load":    franzLoad,
}

func franzClient(a args, opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(strings.Split(a.must("bootstrap"), ",")...)}, opts...)...)
	check(err, "kgo.NewClient")
	return cl
}

func franzCodec(name string) kgo.CompressionCodec {
	switch name {
	case "none":
		return kgo.NoCompression()
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	fail("unknown codec %q", name)
	return kgo.NoCompression()
}

func franzAdmin(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	cl := franzClient(a)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := a.must("topic")
	retention := "3600000"
	created, err := adm.CreateTopic(ctx, int32(a.num("partitions", 3)), 1, map[string]*string{"retention.ms": &retention}, topic)
	check(err, "CreateTopic")
	check(created.Err, "CreateTopic "+topic)
	emit("created", map[string]any{"topic": created.Topic, "partitions": created.NumPartitions})
	again, _ := adm.CreateTopic(ctx, 1, 1, nil, topic) // its error is the response's
	emit("create-again", map[string]any{"error": errName(again.Err)})

	listed, err := adm.ListTopics(ctx)
	check(err, "ListTopics")
	emit("listed", map[string]any{"topics": listed.Names()})
	details, err := adm.ListTopics(ctx, topic)
	check(err, "ListTopics "+topic)
	detail := details[topic]
	check(detail.Err, "topic detail")
	leaders := map[int32]int32{}
	for p, d := range detail.Partitions {
		leaders[p] = d.Leader
	}
	emit("described", map[string]any{"topic": topic, "leaders": leaders, "id": detail.ID.String()})

	emit("configs", map[string]any{"configs": franzTopicConfigs(ctx, adm, topic)})
	altered, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("7200000")},
		{Op: kadm.SetConfig, Name: "cleanup.policy", Value: kadm.StringPtr("compact")},
	}, topic)
	check(err, "AlterTopicConfigs")
	for _, r := range altered {
		check(r.Err, "AlterTopicConfigs "+r.Name)
	}
	emit("configs", map[string]any{"configs": franzTopicConfigs(ctx, adm, topic)})

	bad, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "no.such.config", Value: kadm.StringPtr("1")}}, topic)
	check(err, "AlterTopicConfigs no.such.config")
	emit("alter-unknown", map[string]any{"error": errName(bad[0].Err)})

	parts, err := adm.CreatePartitions(ctx, 2, topic)
	check(err, "CreatePartitions")
	check(parts[topic].Err, "CreatePartitions "+topic)
	details, err = adm.ListTopics(ctx, topic)
	check(err, "ListTopics after CreatePartitions")
	emit("partitions", map[string]any{"count": len(details[topic].Partitions)})

	brokerConfigs, err := adm.DescribeBrokerConfigs(ctx)
	check(err, "DescribeBrokerConfigs")
	emit("broker-configs", map[string]any{"count": len(brokerConfigs[0].Configs), "error": errName(brokerConfigs[0].Err)})

	deleted, err := adm.DeleteTopics(ctx, topic)
	check(err, "DeleteTopics")
	check(deleted[topic].Err, "DeleteTopics "+topic)
	gone, err := adm.DeleteTopics(ctx, topic)
	check(err, "DeleteTopics again")
	emit("delete-again", map[string]any{"error": errName(gone[topic].Err)})
	// a fresh client: kadm answers ListTopics from metadata it cached up to MetadataMinAge ago
	fresh := franzClient(a)
	defer fresh.Close()
	listed, err = kadm.NewClient(fresh).ListTopics(ctx)
	check(err, "ListTopics after delete")
	emit("listed", map[string]any{"topics": listed.Names()})
}

// franzCreate creates topics=name:partitions,...
func franzCreate(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	cl := franzClient(a)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for name, partitions := range a.topics() {
		created, err := adm.CreateTopic(ctx, int32(partitions), 1, nil, name)
		check(err, "CreateTopic "+name)
		emit("created", map[string]any{"topic": created.Topic, "partitions": created.NumPartitions})
	}
}

func franzTopicConfigs(ctx context.Context, adm *kadm.Client, topic string) map[string]any {
	described, err := adm.DescribeTopicConfigs(ctx, topic)
	check(err, "DescribeTopicConfigs")
	rc, err := described.On(topic, nil)
	check(err, "DescribeTopicConfigs "+topic)
	check(rc.Err, "DescribeTopicConfigs result")
	out := map[string]any{}
	for _, c := range rc.Configs {
		if c.Key == "retention.ms" || c.Key == "cleanup.policy" || c.Key == "segment.bytes" {
			out[c.Key] = map[string]any{"value": c.MaybeValue(), "source": c.Source.String()}
		}
	}
	return out
}

func errName(err error) string {
	if err == nil {
		return ""
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return ke.Message
	}
	return err.Error()
}

func franzProduce(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	opts := []kgo.Opt{kgo.ProducerBatchCompression(franzCodec(a.str("codec", "none"))),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5 * time.Millisecond)}
	if a.str("idempotent", "1") == "0" {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	cl := franzClient(a, opts...)
	defer cl.Close()
	topic, partitions, start := a.must("topic"), a.num("partitions", 1), a.num("start", 0)
	var records []*kgo.Record
	for i := start; i < start+a.num("count", 100); i++ {
		records = append(records, &kgo.Record{Topic: topic, Partition: int32(i % partitions), Key: Key(i),
			Value: Value(i), Headers: []kgo.RecordHeader{{Key: "i", Value: Header(i)}}})
	}
	results := cl.ProduceSync(ctx, records...)
	check(results.FirstErr(), "ProduceSync")
	for _, r := range results {
		emit("produced", map[string]any{"partition": r.Record.Partition, "offset": r.Record.Offset,
			"key": string(r.Record.Key), "producer_id": r.Record.ProducerID})
	}
}

func franzHeaders(r *kgo.Record) map[string]string {
	out := map[string]string{}
	for _, h := range r.Headers {
		out[h.Key] = string(h.Value)
	}
	return out
}

// franzConsume reads `count` records of the topics from the start (no group), then polls on for
// settle-ms to show any record beyond them.
func franzConsume(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	isolation := kgo.ReadUncommitted()
	if a.str("isolation", "uncommitted") == "committed" {
		isolation = kgo.ReadCommitted()
	}
	cl := franzClient(a, kgo.ConsumeTopics(strings.Split(a.must("topic"), ",")...), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(isolation))
	defer cl.Close()
	count, got := a.num("count", 0), 0
	var settle context.Context
	for {
		pollCtx := ctx
		if got >= count {
			if settle == nil {
				var stop context.CancelFunc
				settle, stop = context.WithTimeout(ctx, time.Duration(a.num("settle-ms", 300))*time.Millisecond)
				defer stop()
			}
			pollCtx = settle
		}
		fetches := cl.PollFetches(pollCtx)
		if pollCtx.Err() != nil {
			if got < count {
				fail("consumed %d of %d records before the timeout", got, count)
			}
			return
		}
		fetches.EachError(func(t string, p int32, err error) { fail("fetch %s/%d: %v", t, p, err) })
		fetches.EachRecord(func(r *kgo.Record) {
			got++
			record(r.Topic, r.Partition, r.Offset, r.Key, r.Value, franzHeaders(r), "")
		})
	}
}

// franzMember is one member of a consumer group: it prints the records it processes and commits
// after each poll, until SIGTERM, when it commits and leaves the group. protocol=consumer joins
// with KIP-848's ConsumerGroupHeartbeat (kgo.ServerSideBalancer, the default cooperative-sticky
// balancer asking for the broker's "uniform" assignor); otherwise the classic protocol. With
// retry-errors=1 the errors a poll returns are printed ({"kind":"fetch-error"}), not fatal;
// regex=1 makes topic a regex.
func franzMember(a args) {
	ctx := stopContext()
	name := a.must("name")
	var opts []kgo.Opt
	if a.str("protocol", "classic") == "consumer" {
		opts = append(opts, kgo.ServerSideBalancer())
	}
	if a.str("regex", "0") == "1" { // topic= is a regex (KIP-848: the broker resolves it)
		opts = append(opts, kgo.ConsumeRegex())
	}
	var cl *kgo.Client
	cl = franzClient(a, append(opts, kgo.ConsumerGroup(a.must("group")), kgo.ConsumeTopics(a.must("topic")),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.ClientID(name), kgo.HeartbeatInterval(500*time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
			emit("assigned", map[string]any{"member": name, "partitions": assigned})
		}),
		kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
			check(cl.CommitUncommittedOffsets(ctx), "commit on revoke")
			emit("revoked", map[string]any{"member": name, "partitions": revoked})
		}))...)
	for ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fetches.EachError(func(t string, p int32, err error) {
			if a.str("retry-errors", "0") == "1" { // e.g. its coordinator died: the client retries
				emit("fetch-error", map[string]any{"member": name, "error": err.Error()})
				return
			}
			fail("fetch %s/%d: %v", t, p, err)
		})
		fetches.EachRecord(func(r *kgo.Record) {
			record(r.Topic, r.Partition, r.Offset, r.Key, nil, nil, name)
		})
		if err := cl.CommitUncommittedOffsets(context.Background()); err != nil {
			emit("commit-failed", map[string]any{"member": name, "error": err.Error()})
		}
	}
	done, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	check(cl.CommitUncommittedOffsets(done), "final commit")
	cl.Close() // leaves the group
	emit("closed", map[string]any{"member": name})
}

func franzGroups(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	cl := franzClient(a)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	group := a.must("group")
	listed, err := adm.ListGroups(ctx)
	check(err, "ListGroups")
	groups := map[string]any{}
	for name, g := range listed {
		groups[name] = map[string]any{"state": g.State, "protocol_type": g.ProtocolType, "group_type": g.GroupType}
	}
	emit("listed-groups", map[string]any{"groups": groups})
	if a.str("type", "classic") == "consumer" {
		franzDescribeConsumerGroup(ctx, adm, group)
		return
	}
	described, err := adm.DescribeGroups(ctx, group)
	check(err, "DescribeGroups")
	g := described[group]
	if errors.Is(g.Err, kerr.GroupIDNotFound) { // DescribeGroups v6+ (Kafka 4.0, KIP-1043)
		emit("described-group", map[string]any{"group": group, "state": "", "members": 0, "error": errName(g.Err)})
		return
	}
	check(g.Err, "DescribeGroups "+group)
	emit("described-group", map[string]any{"group": g.Group, "state": g.State, "protocol_type": g.ProtocolType,
		"protocol": g.Protocol, "members": len(g.Members), "coordinator": g.Coordinator.NodeID})
	franzEmitCommitted(ctx, adm, group)
	lag, err := adm.Lag(ctx, group)
	check(err, "Lag")
	groupLag := lag[group]
	emit("lag", map[string]any{"group": group, "total": groupLag.Lag.Total(), "error": errName(groupLag.Error())})
}

// franzDescribeConsumerGroup: ConsumerGroupDescribe (KIP-848) and the committed offsets.
func franzDescribeConsumerGroup(ctx context.Context, adm *kadm.Client, group string) {
	described, err := adm.DescribeConsumerGroups(ctx, group)
	check(err, "DescribeConsumerGroups")
	g := described[group]
	check(g.Err, "DescribeConsumerGroups "+group)
	members := []map[string]any{}
	for _, m := range g.Members {
		assigned := map[string][]int32{}
		m.Assignment.EachPartitions(func(t string, ps []int32) { assigned[t] = ps })
		members = append(members, map[string]any{"client_id": m.ClientID, "epoch": m.MemberEpoch,
			"type": m.MemberType, "assignment": assigned})
	}
	emit("described-consumer-group", map[string]any{"group": g.Group, "state": g.State, "epoch": g.Epoch,
		"assignor": g.AssignorName, "members": members})
	franzEmitCommitted(ctx, adm, group)
}

func franzEmitCommitted(ctx context.Context, adm *kadm.Client, group string) {
	fetched, err := adm.FetchOffsets(ctx, group)
	check(err, "FetchOffsets")
	check(fetched.Error(), "FetchOffsets "+group)
	offsets := map[string]map[int32]int64{}
	fetched.Each(func(o kadm.OffsetResponse) {
		if offsets[o.Topic] == nil {
			offsets[o.Topic] = map[int32]int64{}
		}
		offsets[o.Topic][o.Partition] = o.At
	})
	emit("offsets", map[string]any{"group": group, "offsets": offsets})
}

func franzOffsets(listed kadm.ListedOffsets, topic string) map[int32]int64 {
	out := map[int32]int64{}
	for p, o := range listed[topic] {
		check(o.Err, fmt.Sprintf("offset of %s/%d", topic, p))
		out[p] = o.Offset
	}
	return out
}

// franzCluster: DescribeCluster, the metadata's brokers, DescribeLogDirs, ListOffsets and
// DeleteRecords on a topic the test has filled.
func franzCluster(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	cl := franzClient(a)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := a.must("topic")

	req := kmsg.NewPtrDescribeClusterRequest()
	resp, err := req.RequestWith(ctx, cl)
	check(err, "DescribeCluster")
	check(kerr.ErrorForCode(resp.ErrorCode), "DescribeCluster error code")
	var brokers []map[string]any
	for _, b := range resp.Brokers {
		brokers = append(brokers, map[string]any{"id": b.NodeID, "host": b.Host, "port": b.Port})
	}
	emit("cluster", map[string]any{"cluster_id": resp.ClusterID, "controller": resp.ControllerID, "brokers": brokers,
		"version": req.GetVersion()})
	meta, err := adm.BrokerMetadata(ctx)
	check(err, "BrokerMetadata")
	emit("metadata", map[string]any{"cluster_id": meta.Cluster, "controller": meta.Controller, "brokers": len(meta.Brokers)})

	dirs, err := adm.DescribeAllLogDirs(ctx, nil)
	check(err, "DescribeAllLogDirs")
	var described []map[string]any
	dirs.Each(func(d kadm.DescribedLogDir) {
		sizes := map[int32]int64{}
		d.Topics.Each(func(p kadm.DescribedLogDirPartition) {
			if p.Topic == topic {
				sizes[p.Partition] = p.Size
			}
		})
		described = append(described, map[string]any{"broker": d.Broker, "dir": d.Dir, "error": errName(d.Err),
			"total_bytes": d.TotalBytes, "usable_bytes": d.UsableBytes, "sizes": sizes})
	})
	emit("log-dirs", map[string]any{"dirs": described})

	starts, err := adm.ListStartOffsets(ctx, topic)
	check(err, "ListStartOffsets")
	ends, err := adm.ListEndOffsets(ctx, topic)
	check(err, "ListEndOffsets")
	committed, err := adm.ListCommittedOffsets(ctx, topic)
	check(err, "ListCommittedOffsets")
	maxTs, err := adm.ListMaxTimestampOffsets(ctx, topic)
	check(err, "ListMaxTimestampOffsets")
	emit("list-offsets", map[string]any{"start": franzOffsets(starts, topic), "end": franzOffsets(ends, topic),
		"committed": franzOffsets(committed, topic), "max_timestamp": franzOffsets(maxTs, topic)})

	to := int64(a.num("delete-to", 5))
	deleted, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: {At: to}}})
	check(err, "DeleteRecords")
	check(deleted.Error(), "DeleteRecords result")
	lows := map[int32]int64{}
	deleted.Each(func(d kadm.DeleteRecordsResponse) { lows[d.Partition] = d.LowWatermark })
	beyond, err := adm.DeleteRecords(ctx, kadm.Offsets{topic: {0: {At: 1 << 40}}})
	check(err, "DeleteRecords beyond the end")
	var beyondErr string
	beyond.Each(func(d kadm.DeleteRecordsResponse) { beyondErr = errName(d.Err) })
	starts, err = adm.ListStartOffsets(ctx, topic)
	check(err, "ListStartOffsets after DeleteRecords")
	emit("deleted-records", map[string]any{"low_watermarks": lows, "beyond_end": beyondErr,
		"start": franzOffsets(starts, topic)})
}

// franzTxn: a GroupTransactSession copies `count` records of `input` to `output` (each poll one
// transaction, the consumed offsets committed in it); then a transactional producer writes
// `aborted` records to `output` and aborts.
func franzTxn(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	input, output, count := a.must("input"), a.must("output"), a.num("count", 0)
	sess, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(a.must("bootstrap")),
		kgo.TransactionalID(a.must("txn-id")), kgo.ConsumerGroup(a.must("group")), kgo.ConsumeTopics(input),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(), kgo.DefaultProduceTopic(output),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	check(err, "NewGroupTransactSession")
	copied, transactions := 0, 0
	for copied < count {
		fetches := sess.PollFetches(ctx)
		check(ctx.Err(), fmt.Sprintf("copied %d of %d records", copied, count))
		fetches.EachError(func(t string, p int32, err error) { fail("fetch %s/%d: %v", t, p, err) })
		if fetches.NumRecords() == 0 {
			continue
		}
		check(sess.Begin(), "Begin")
		n := 0
		fetches.EachRecord(func(r *kgo.Record) {
			n++
			out := &kgo.Record{Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers}
			sess.Produce(ctx, out, func(_ *kgo.Record, err error) { check(err, "transactional produce") })
		})
		committed, err := sess.End(ctx, kgo.TryCommit)
		check(err, "End")
		if committed {
			copied += n
			transactions++
		}
	}
	sess.Close()
	emit("copied", map[string]any{"records": copied, "transactions": transactions})

	producer := franzClient(a, kgo.TransactionalID(a.must("txn-id")+"-aborter"), kgo.DefaultProduceTopic(output),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	defer producer.Close()
	check(producer.BeginTransaction(), "BeginTransaction")
	aborted := a.num("aborted", 0)
	var records []*kgo.Record
	for i := 0; i < aborted; i++ {
		records = append(records, &kgo.Record{Partition: int32(i % a.num("partitions", 1)), Key: []byte(fmt.Sprintf("aborted-%d", i)), Value: []byte("x")})
	}
	check(producer.ProduceSync(ctx, records...).FirstErr(), "produce to abort")
	check(producer.EndTransaction(ctx, kgo.TryAbort), "abort")
	emit("aborted", map[string]any{"records": aborted})
}

// franzLoad is an idempotent acks=all producer writing keys "NAME-SEQ" (zero-padded) round-robin
// over `partitions` until SIGTERM, at most `in-flight` records unacknowledged, while the test
// kills brokers; then it flushes. It prints {"kind":"acked","partition":p,"offset":o,"key":k}
// per acknowledged record and {"kind":"failed","key":k,"error":e} per failed one.
func franzLoad(a args) {
	ctx := stopContext()
	cl := franzClient(a, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(2*time.Millisecond), kgo.RecordDeliveryTimeout(2*time.Minute),
		kgo.RequestTimeoutOverhead(5*time.Second))
	defer cl.Close()
	topic, partitions, name := a.must("topic"), a.num("partitions", 1), a.str("name", "g")
	window := make(chan struct{}, a.num("in-flight", 200))
	for i := 0; ctx.Err() == nil; i++ {
		select {
		case window <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		key := fmt.Sprintf("%s-%07d", name, i)
		cl.Produce(context.Background(), &kgo.Record{Topic: topic, Partition: int32(i % partitions), Key: []byte(key)},
			func(r *kgo.Record, err error) {
				<-window
				if err != nil {
					emit("failed", map[string]any{"key": key, "error": err.Error()})
					return
				}
				emit("acked", map[string]any{"partition": r.Partition, "offset": r.Offset, "key": key})
			})
	}
	done, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	check(cl.Flush(done), "flush")
}
