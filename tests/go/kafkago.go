package main

// segmentio/kafka-go: Writer, Reader (with and without a group) and Client's admin requests.
// It has no idempotent or transactional producer.

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

var kafkagoCommands = map[string]func(args){
	"admin":   kafkagoAdmin,
	"create":  kafkagoCreate,
	"produce": kafkagoProduce,
	"consume": kafkagoConsume,
	"member":  kafkagoMember,
	"groups":  kafkagoGroups,
}

var kafkagoCodecs = map[string]kafka.Compression{"gzip": kafka.Gzip, "snappy": kafka.Snappy, "lz4": kafka.Lz4,
	"zstd": kafka.Zstd}

func kafkagoClient(a args) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(a.must("bootstrap")), Timeout: 30 * time.Second}
}

// kafkagoErr: Kafka's name for a kafka-go error ("Topic Already Exists" -> TOPIC_ALREADY_EXISTS).
func kafkagoErr(err error) string {
	if err == nil {
		return ""
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		return strings.ToUpper(strings.NewReplacer(" ", "_", "-", "_").Replace(ke.Title()))
	}
	return err.Error()
}

func kafkagoTopicConfigs(ctx context.Context, client *kafka.Client, topic string) map[string]any {
	resp, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
		{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic}}})
	check(err, "DescribeConfigs")
	check(resp.Resources[0].Error, "DescribeConfigs "+topic)
	out := map[string]any{}
	for _, e := range resp.Resources[0].ConfigEntries {
		if e.ConfigName == "retention.ms" || e.ConfigName == "cleanup.policy" || e.ConfigName == "segment.bytes" {
			out[e.ConfigName] = map[string]any{"value": e.ConfigValue, "source": e.ConfigSource, "default": e.IsDefault}
		}
	}
	return out
}

func kafkagoTopics(ctx context.Context, client *kafka.Client, topics ...string) map[string]kafka.Topic {
	// a transport of its own: a shared one answers from metadata it cached up to 6 s ago
	fresh := &kafka.Client{Addr: client.Addr, Transport: &kafka.Transport{}}
	resp, err := fresh.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	check(err, "Metadata")
	out := map[string]kafka.Topic{}
	for _, t := range resp.Topics {
		out[t.Name] = t
	}
	return out
}

func names(topics map[string]kafka.Topic) []string {
	var out []string
	for name := range topics {
		out = append(out, name)
	}
	return out
}

func kafkagoAdmin(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	client := kafkagoClient(a)
	topic := a.must("topic")
	create := func(partitions int, configs []kafka.ConfigEntry) error {
		resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
			{Topic: topic, NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: configs}}})
		check(err, "CreateTopics")
		return resp.Errors[topic]
	}
	check(create(a.num("partitions", 3), []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: "3600000"}}), "CreateTopics "+topic)
	emit("created", map[string]any{"topic": topic})
	emit("create-again", map[string]any{"error": kafkagoErr(create(1, nil))})
	all := kafkagoTopics(ctx, client)
	emit("listed", map[string]any{"topics": names(all)})
	leaders := map[int]int{}
	for _, p := range kafkagoTopics(ctx, client, topic)[topic].Partitions {
		leaders[p.ID] = p.Leader.ID
	}
	emit("described", map[string]any{"topic": topic, "leaders": leaders})

	emit("configs", map[string]any{"configs": kafkagoTopicConfigs(ctx, client, topic)})
	alter := func(configs ...kafka.IncrementalAlterConfigsRequestConfig) error {
		resp, err := client.IncrementalAlterConfigs(ctx, &kafka.IncrementalAlterConfigsRequest{
			Resources: []kafka.IncrementalAlterConfigsRequestResource{{ResourceType: kafka.ResourceTypeTopic,
				ResourceName: topic, Configs: configs}}})
		check(err, "IncrementalAlterConfigs")
		return resp.Resources[0].Error
	}
	check(alter(kafka.IncrementalAlterConfigsRequestConfig{Name: "retention.ms", Value: "7200000", ConfigOperation: kafka.ConfigOperationSet},
		kafka.IncrementalAlterConfigsRequestConfig{Name: "cleanup.policy", Value: "compact", ConfigOperation: kafka.ConfigOperationSet}),
		"IncrementalAlterConfigs "+topic)
	emit("configs", map[string]any{"configs": kafkagoTopicConfigs(ctx, client, topic)})
	emit("alter-unknown", map[string]any{"error": kafkagoErr(alter(kafka.IncrementalAlterConfigsRequestConfig{
		Name: "no.such.config", Value: "1", ConfigOperation: kafka.ConfigOperationSet}))})

	parts, err := client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 5}}})
	check(err, "CreatePartitions")
	check(parts.Errors[topic], "CreatePartitions "+topic)
	emit("partitions", map[string]any{"count": len(kafkagoTopics(ctx, client, topic)[topic].Partitions)})

	remove := func() error {
		resp, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{topic}})
		check(err, "DeleteTopics")
		return resp.Errors[topic]
	}
	check(remove(), "DeleteTopics "+topic)
	emit("delete-again", map[string]any{"error": kafkagoErr(remove())})
	emit("listed", map[string]any{"topics": names(kafkagoTopics(ctx, client))})
}

func kafkagoCreate(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	client := kafkagoClient(a)
	for name, partitions := range a.topics() {
		resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
			{Topic: name, NumPartitions: partitions, ReplicationFactor: 1}}})
		check(err, "CreateTopics")
		check(resp.Errors[name], "CreateTopics "+name)
		emit("created", map[string]any{"topic": name, "partitions": partitions})
	}
}

func kafkagoProduce(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	partitions, start, count := a.num("partitions", 1), a.num("start", 0), a.num("count", 100)
	var mu sync.Mutex
	var failed error
	writer := &kafka.Writer{Addr: kafka.TCP(a.must("bootstrap")), Topic: a.must("topic"),
		Compression: kafkagoCodecs[a.str("codec", "none")], RequiredAcks: kafka.RequireAll,
		BatchSize: count, BatchTimeout: 5 * time.Millisecond,
		// record i goes to partition i % partitions, as with the other clients
		Balancer: kafka.BalancerFunc(func(m kafka.Message, available ...int) int {
			i, _ := strconv.Atoi(string(m.Headers[0].Value))
			return available[i%partitions]
		}),
		Completion: func(messages []kafka.Message, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = err
			}
			for _, m := range messages {
				emit("produced", map[string]any{"partition": m.Partition, "offset": m.Offset, "key": string(m.Key)})
			}
		}}
	var messages []kafka.Message
	for i := start; i < start+count; i++ {
		messages = append(messages, kafka.Message{Key: Key(i), Value: Value(i),
			Headers: []kafka.Header{{Key: "i", Value: Header(i)}}})
	}
	check(writer.WriteMessages(ctx, messages...), "WriteMessages")
	check(writer.Close(), "Close")
	check(failed, "write")
}

func partitionsOf(topics map[string]kafka.Topic) []kafka.Partition {
	var out []kafka.Partition
	for _, t := range topics {
		out = append(out, t.Partitions...)
	}
	return out
}

func kafkagoHeaders(m kafka.Message) map[string]string {
	out := map[string]string{}
	for _, h := range m.Headers {
		out[h.Key] = string(h.Value)
	}
	return out
}

// kafkagoConsume: one Reader per partition of the topics from the first offset, until `count` records, then
// settle-ms more.
func kafkagoConsume(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	isolation := kafka.ReadUncommitted
	if a.str("isolation", "uncommitted") == "committed" {
		isolation = kafka.ReadCommitted
	}
	topics := kafkagoTopics(ctx, kafkagoClient(a), strings.Split(a.must("topic"), ",")...)
	messages := make(chan kafka.Message)
	for _, p := range partitionsOf(topics) {
		reader := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{a.must("bootstrap")}, Topic: p.Topic,
			Partition: p.ID, MaxWait: 100 * time.Millisecond, IsolationLevel: isolation})
		check(reader.SetOffset(kafka.FirstOffset), "SetOffset")
		defer reader.Close()
		go func() {
			for {
				m, err := reader.ReadMessage(ctx)
				if err != nil {
					return
				}
				messages <- m
			}
		}()
	}
	count, got := a.num("count", 0), 0
	var settle <-chan time.Time
	for {
		if got >= count && settle == nil {
			settle = time.After(time.Duration(a.num("settle-ms", 300)) * time.Millisecond)
		}
		select {
		case m := <-messages:
			got++
			record(m.Topic, int32(m.Partition), m.Offset, m.Key, m.Value, kafkagoHeaders(m), "")
		case <-settle:
			return
		case <-ctx.Done():
			fail("consumed %d of %d records before the timeout", got, count)
		}
	}
}

// kafkagoMember: a Reader in a consumer group, committing each record, until SIGTERM.
func kafkagoMember(a args) {
	ctx := stopContext()
	name := a.must("name")
	reader := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{a.must("bootstrap")}, GroupID: a.must("group"),
		Topic: a.must("topic"), StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond,
		HeartbeatInterval: 500 * time.Millisecond, SessionTimeout: 10 * time.Second,
		RebalanceTimeout: 10 * time.Second, ErrorLogger: kafka.LoggerFunc(func(format string, v ...any) {
			emit("group-error", map[string]any{"member": name, "error": fmt.Sprintf(format, v...)})
		})})
	for {
		m, err := reader.FetchMessage(ctx)
		if err != nil {
			break
		}
		record(m.Topic, int32(m.Partition), m.Offset, m.Key, nil, nil, name)
		if err := reader.CommitMessages(ctx, m); err != nil && ctx.Err() == nil {
			emit("commit-failed", map[string]any{"member": name, "error": err.Error()})
		}
	}
	check(reader.Close(), "Close") // leaves the group
	emit("closed", map[string]any{"member": name})
}

func kafkagoGroups(a args) {
	ctx, cancel := timeoutContext(a)
	defer cancel()
	client := kafkagoClient(a)
	group := a.must("group")
	listed, err := client.ListGroups(ctx, &kafka.ListGroupsRequest{})
	check(err, "ListGroups")
	check(listed.Error, "ListGroups result")
	groups := map[string]any{}
	for _, g := range listed.Groups {
		groups[g.GroupID] = map[string]any{"protocol_type": g.ProtocolType, "coordinator": g.Coordinator}
	}
	emit("listed-groups", map[string]any{"groups": groups})
	described, err := client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	check(err, "DescribeGroups")
	g := described.Groups[0]
	emit("described-group", map[string]any{"group": g.GroupID, "state": g.GroupState, "members": len(g.Members),
		"error": kafkagoErr(g.Error)})
	topic := a.must("topic")
	fetched, err := client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0, 1, 2}}})
	check(err, "OffsetFetch")
	check(fetched.Error, "OffsetFetch result")
	offsets := map[string]map[int]int64{}
	for t, partitions := range fetched.Topics {
		offsets[t] = map[int]int64{}
		for _, p := range partitions {
			check(p.Error, fmt.Sprintf("offset of %s/%d", t, p.Partition))
			offsets[t][p.Partition] = p.CommittedOffset
		}
	}
	emit("offsets", map[string]any{"group": group, "offsets": offsets})
	ends, err := client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{
		topic: {kafka.LastOffsetOf(0), kafka.LastOffsetOf(1), kafka.LastOffsetOf(2)}}})
	check(err, "ListOffsets")
	last := map[int]int64{}
	for _, p := range ends.Topics[topic] {
		check(p.Error, "ListOffsets partition")
		last[p.Partition] = p.LastOffset
	}
	emit("end-offsets", map[string]any{"topic": topic, "end": last})
}
