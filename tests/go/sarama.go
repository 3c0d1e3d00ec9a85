package main

// IBM/sarama: SyncProducer, PartitionConsumer, ConsumerGroup, ClusterAdmin and its transactions.

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

var saramaCommands = map[string]func(args){
	"admin":   saramaAdmin,
	"create":  saramaCreate,
	"produce": saramaProduce,
	"consume": saramaConsume,
	"member":  saramaMember,
	"groups":  saramaGroups,
	"txn":     saramaTxn,
}

var saramaCodecs = map[string]sarama.CompressionCodec{"none": sarama.CompressionNone, "gzip": sarama.CompressionGZIP,
	"snappy": sarama.CompressionSnappy, "lz4": sarama.CompressionLZ4, "zstd": sarama.CompressionZSTD}

func saramaConfig(a args) *sarama.Config {
	config := sarama.NewConfig()
	config.Version = sarama.V4_1_0_0 // the Kafka the suite compares with
	config.ClientID = a.str("name", "akfak-tests-sarama")
	config.Metadata.AllowAutoTopicCreation = false
	return config
}

func saramaAdminClient(a args) sarama.ClusterAdmin {
	adm, err := sarama.NewClusterAdmin([]string{a.must("bootstrap")}, saramaConfig(a))
	check(err, "NewClusterAdmin")
	return adm
}

func kafkaErrName(err error) string {
	if err == nil {
		return ""
	}
	var kerr sarama.KError
	if errors.As(err, &kerr) {
		return saramaErrorNames[kerr]
	}
	var terr *sarama.TopicError
	if errors.As(err, &terr) {
		return saramaErrorNames[terr.Err]
	}
	return err.Error()
}

// sarama's KError prints a sentence; the tests compare Kafka's error names
var saramaErrorNames = map[sarama.KError]string{
	sarama.ErrNoError: "", sarama.ErrTopicAlreadyExists: "TOPIC_ALREADY_EXISTS",
	sarama.ErrUnknownTopicOrPartition: "UNKNOWN_TOPIC_OR_PARTITION", sarama.ErrInvalidConfig: "INVALID_CONFIG",
	sarama.ErrOffsetOutOfRange: "OFFSET_OUT_OF_RANGE", sarama.ErrInvalidPartitions: "INVALID_PARTITIONS",
	sarama.ErrInvalidRequest: "INVALID_REQUEST", sarama.ErrPolicyViolation: "POLICY_VIOLATION",
}

func saramaTopicConfigs(adm sarama.ClusterAdmin, topic string) map[string]any {
	entries, err := adm.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	check(err, "DescribeConfig")
	out := map[string]any{}
	for _, e := range entries {
		if e.Name == "retention.ms" || e.Name == "cleanup.policy" || e.Name == "segment.bytes" {
			out[e.Name] = map[string]any{"value": e.Value, "source": e.Source.String()}
		}
	}
	return out
}

func saramaAdmin(a args) {
	adm := saramaAdminClient(a)
	defer adm.Close()
	topic := a.must("topic")
	retention := "3600000"
	check(adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: int32(a.num("partitions", 3)), ReplicationFactor: 1,
		ConfigEntries: map[string]*string{"retention.ms": &retention}}, false), "CreateTopic")
	emit("created", map[string]any{"topic": topic})
	err := adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false)
	emit("create-again", map[string]any{"error": kafkaErrName(err)})

	listed, err := adm.ListTopics()
	check(err, "ListTopics")
	var names []string
	for name := range listed {
		names = append(names, name)
	}
	emit("listed", map[string]any{"topics": names, "partitions": listed[topic].NumPartitions})
	described, err := adm.DescribeTopics([]string{topic})
	check(err, "DescribeTopics")
	leaders := map[int32]int32{}
	for _, p := range described[0].Partitions {
		leaders[p.ID] = p.Leader
	}
	emit("described", map[string]any{"topic": described[0].Name, "error": kafkaErrName(described[0].Err), "leaders": leaders})

	emit("configs", map[string]any{"configs": saramaTopicConfigs(adm, topic)})
	v1, v2 := "7200000", "compact"
	check(adm.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"retention.ms":   {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &v1},
		"cleanup.policy": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &v2},
	}, false), "IncrementalAlterConfig")
	emit("configs", map[string]any{"configs": saramaTopicConfigs(adm, topic)})
	v3 := "1"
	err = adm.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
		"no.such.config": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &v3}}, false)
	emit("alter-unknown", map[string]any{"error": kafkaErrName(err)})
	// the legacy AlterConfigs (replaces the whole set: retention.ms back to its default)
	check(adm.AlterConfig(sarama.TopicResource, topic, map[string]*string{"cleanup.policy": &v2}, false), "AlterConfig")
	emit("configs", map[string]any{"configs": saramaTopicConfigs(adm, topic)})

	check(adm.CreatePartitions(topic, 5, nil, false), "CreatePartitions")
	described, err = adm.DescribeTopics([]string{topic})
	check(err, "DescribeTopics after CreatePartitions")
	emit("partitions", map[string]any{"count": len(described[0].Partitions)})
	err = adm.CreatePartitions(topic, 2, nil, false)
	emit("shrink-partitions", map[string]any{"error": kafkaErrName(err)})

	brokers, controller, err := adm.DescribeCluster()
	check(err, "DescribeCluster")
	emit("cluster", map[string]any{"brokers": len(brokers), "controller": controller})
	dirs, err := adm.DescribeLogDirs([]int32{brokers[0].ID()})
	check(err, "DescribeLogDirs")
	var found []map[string]any
	for broker, list := range dirs {
		for _, d := range list {
			partitions := 0
			for _, t := range d.Topics {
				if t.Topic == topic {
					partitions = len(t.Partitions)
				}
			}
			found = append(found, map[string]any{"broker": broker, "path": d.Path, "error": kafkaErrName(d.ErrorCode),
				"partitions": partitions})
		}
	}
	emit("log-dirs", map[string]any{"dirs": found})

	check(adm.DeleteTopic(topic), "DeleteTopic")
	emit("delete-again", map[string]any{"error": kafkaErrName(adm.DeleteTopic(topic))})
	listed, err = adm.ListTopics()
	check(err, "ListTopics after delete")
	names = nil
	for name := range listed {
		names = append(names, name)
	}
	emit("listed", map[string]any{"topics": names})
}

func saramaCreate(a args) {
	adm := saramaAdminClient(a)
	defer adm.Close()
	for name, partitions := range a.topics() {
		check(adm.CreateTopic(name, &sarama.TopicDetail{NumPartitions: int32(partitions), ReplicationFactor: 1}, false),
			"CreateTopic "+name)
		emit("created", map[string]any{"topic": name, "partitions": partitions})
	}
}

func saramaMessages(topic string, start, count, partitions int) []*sarama.ProducerMessage {
	var messages []*sarama.ProducerMessage
	for i := start; i < start+count; i++ {
		messages = append(messages, &sarama.ProducerMessage{Topic: topic, Partition: int32(i % partitions),
			Key: sarama.ByteEncoder(Key(i)), Value: sarama.ByteEncoder(Value(i)),
			Headers: []sarama.RecordHeader{{Key: []byte("i"), Value: Header(i)}}})
	}
	return messages
}

func saramaProduce(a args) {
	config := saramaConfig(a)
	config.Producer.Return.Successes = true
	config.Producer.Partitioner = sarama.NewManualPartitioner
	config.Producer.RequiredAcks = sarama.WaitForAll
	config.Producer.Compression = saramaCodecs[a.str("codec", "none")]
	config.Producer.Flush.Frequency = 5 * time.Millisecond
	if a.str("idempotent", "0") == "1" {
		config.Producer.Idempotent = true
		config.Net.MaxOpenRequests = 1
	}
	producer, err := sarama.NewSyncProducer([]string{a.must("bootstrap")}, config)
	check(err, "NewSyncProducer")
	defer producer.Close()
	messages := saramaMessages(a.must("topic"), a.num("start", 0), a.num("count", 100), a.num("partitions", 1))
	check(producer.SendMessages(messages), "SendMessages")
	for _, m := range messages {
		key, _ := m.Key.Encode()
		emit("produced", map[string]any{"partition": m.Partition, "offset": m.Offset, "key": string(key)})
	}
}

func saramaHeaders(m *sarama.ConsumerMessage) map[string]string {
	out := map[string]string{}
	for _, h := range m.Headers {
		out[string(h.Key)] = string(h.Value)
	}
	return out
}

// saramaConsume reads every partition of the topics from the start until `count` records, then
// settle-ms more.
func saramaConsume(a args) {
	config := saramaConfig(a)
	if a.str("isolation", "uncommitted") == "committed" {
		config.Consumer.IsolationLevel = sarama.ReadCommitted
	}
	consumer, err := sarama.NewConsumer([]string{a.must("bootstrap")}, config)
	check(err, "NewConsumer")
	defer consumer.Close()
	messages := make(chan *sarama.ConsumerMessage)
	for _, topic := range strings.Split(a.must("topic"), ",") {
		partitions, err := consumer.Partitions(topic)
		check(err, "Partitions")
		for _, p := range partitions {
			pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
			check(err, fmt.Sprintf("ConsumePartition %s/%d", topic, p))
			defer pc.AsyncClose()
			go func() {
				for m := range pc.Messages() {
					messages <- m
				}
			}()
		}
	}
	count, got := a.num("count", 0), 0
	deadline := time.After(time.Duration(a.num("timeout-ms", 60000)) * time.Millisecond)
	var settle <-chan time.Time
	for {
		if got >= count && settle == nil {
			settle = time.After(time.Duration(a.num("settle-ms", 300)) * time.Millisecond)
		}
		select {
		case m := <-messages:
			got++
			record(m.Topic, m.Partition, m.Offset, m.Key, m.Value, saramaHeaders(m), "")
		case <-settle:
			return
		case <-deadline:
			fail("consumed %d of %d records before the timeout", got, count)
		}
	}
}

type saramaHandler struct {
	name string
	mu   sync.Mutex
}

func (h *saramaHandler) Setup(s sarama.ConsumerGroupSession) error {
	emit("assigned", map[string]any{"member": h.name, "partitions": s.Claims(), "generation": s.GenerationID()})
	return nil
}

func (h *saramaHandler) Cleanup(s sarama.ConsumerGroupSession) error {
	s.Commit()
	emit("revoked", map[string]any{"member": h.name, "partitions": s.Claims()})
	return nil
}

func (h *saramaHandler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		record(m.Topic, m.Partition, m.Offset, m.Key, nil, nil, h.name)
		s.MarkMessage(m, "")
		if len(claim.Messages()) == 0 { // a synchronous commit per record takes ~100 ms (on Kafka too)
			s.Commit()
		}
	}
	return nil
}

// saramaMember: one member of a consumer group, committing what it has read whenever it has read all
// it was given, until SIGTERM.
func saramaMember(a args) {
	ctx := stopContext()
	config := saramaConfig(a)
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	config.Consumer.Offsets.AutoCommit.Enable = false
	config.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	config.Consumer.Return.Errors = true
	name := a.must("name")
	group, err := sarama.NewConsumerGroup([]string{a.must("bootstrap")}, a.must("group"), config)
	check(err, "NewConsumerGroup")
	go func() {
		for err := range group.Errors() {
			emit("group-error", map[string]any{"member": name, "error": err.Error()})
		}
	}()
	handler := &saramaHandler{name: name}
	for ctx.Err() == nil {
		if err := group.Consume(ctx, []string{a.must("topic")}, handler); err != nil && ctx.Err() == nil {
			fail("Consume: %v", err)
		}
	}
	check(group.Close(), "Close")
	emit("closed", map[string]any{"member": name})
}

func saramaGroups(a args) {
	adm := saramaAdminClient(a)
	defer adm.Close()
	group := a.must("group")
	listed, err := adm.ListConsumerGroups()
	check(err, "ListConsumerGroups")
	emit("listed-groups", map[string]any{"groups": listed})
	described, err := adm.DescribeConsumerGroups([]string{group})
	check(err, "DescribeConsumerGroups")
	g := described[0]
	emit("described-group", map[string]any{"group": g.GroupId, "state": g.State, "protocol_type": g.ProtocolType,
		"protocol": g.Protocol, "members": len(g.Members), "error": kafkaErrName(g.Err)})
	fetched, err := adm.ListConsumerGroupOffsets(group, nil)
	check(err, "ListConsumerGroupOffsets")
	offsets := map[string]map[int32]int64{}
	for topic, partitions := range fetched.Blocks {
		offsets[topic] = map[int32]int64{}
		for p, block := range partitions {
			if block.Err != sarama.ErrNoError {
				fail("offset of %s/%d: %v", topic, p, block.Err)
			}
			offsets[topic][p] = block.Offset
		}
	}
	emit("offsets", map[string]any{"group": group, "offsets": offsets, "error": kafkaErrName(fetched.Err)})
	if topic := a.str("delete-records", ""); topic != "" {
		check(adm.DeleteRecords(topic, map[int32]int64{0: 2}), "DeleteRecords")
		err := adm.DeleteRecords(topic, map[int32]int64{0: 1 << 40})
		emit("deleted-records", map[string]any{"beyond_end": err != nil})
	}
}

// saramaTxn: a transactional producer commits `count` records to `topic`, then writes `aborted`
// more and aborts.
func saramaTxn(a args) {
	config := saramaConfig(a)
	config.Producer.Return.Successes = true
	config.Producer.Partitioner = sarama.NewManualPartitioner
	config.Producer.RequiredAcks = sarama.WaitForAll
	config.Producer.Idempotent = true
	config.Producer.Transaction.ID = a.must("txn-id")
	config.Net.MaxOpenRequests = 1
	producer, err := sarama.NewSyncProducer([]string{a.must("bootstrap")}, config)
	check(err, "NewSyncProducer")
	defer producer.Close()
	topic, partitions := a.must("topic"), a.num("partitions", 1)
	check(producer.BeginTxn(), "BeginTxn")
	check(producer.SendMessages(saramaMessages(topic, 0, a.num("count", 10), partitions)), "SendMessages")
	check(producer.CommitTxn(), "CommitTxn")
	emit("committed", map[string]any{"records": a.num("count", 10)})
	check(producer.BeginTxn(), "BeginTxn 2")
	aborted := a.num("aborted", 0)
	check(producer.SendMessages(saramaMessages(topic, 1000, aborted, partitions)), "SendMessages 2")
	check(producer.AbortTxn(), "AbortTxn")
	emit("aborted", map[string]any{"records": aborted})
}
