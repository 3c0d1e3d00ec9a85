// kafkajs 2.2.4: producer (idempotent, transactional), consumer groups and its admin client.
// Its codecs beyond gzip are plug-ins: snappy from kafkajs-snappy, LZ4 frames from lz4-napi,
// zstd from node:zlib.
import { emit, key, must, num, record, require, settle, stopped, topicsSpec, value, zstd } from './common.mjs'

const { Kafka, CompressionTypes, CompressionCodecs, ConfigResourceTypes, logLevel } = require('kafkajs')
const { compressFrameSync, decompressFrameSync } = require('lz4-napi')

CompressionCodecs[CompressionTypes.Snappy] = require('kafkajs-snappy')
CompressionCodecs[CompressionTypes.LZ4] = () => ({
  compress: async (encoder) => compressFrameSync(encoder.buffer),
  decompress: async (buffer) => decompressFrameSync(buffer)
})
CompressionCodecs[CompressionTypes.ZSTD] = () => ({
  compress: async (encoder) => zstd.compress(encoder.buffer),
  decompress: async (buffer) => zstd.decompress(buffer)
})
const CODECS = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP, snappy: CompressionTypes.Snappy,
  lz4: CompressionTypes.LZ4, zstd: CompressionTypes.ZSTD }

const kafka = (a) => new Kafka({ clientId: a.name || 'akfak-tests-kafkajs', brokers: [must(a, 'bootstrap')],
  logLevel: logLevel.NOTHING, retry: { retries: 2, initialRetryTime: 100 } })

// Kafka's error name (kafkajs keeps it as .type, some errors wrap others)
const errName = (e) => !e ? '' : e.type || (e.partitions && e.partitions.length && errName(e.partitions[0].error)) || (e.originalError && errName(e.originalError)) || (e.cause && errName(e.cause)) ||
  (e.errors && e.errors.length ? errName(e.errors[0]) : `${e.name}: ${e.message}`)

async function attempt (fn) {
  try { await fn(); return '' } catch (e) { return errName(e) }
}

async function admin (a) {
  const adm = kafka(a).admin()
  await adm.connect()
  return adm
}

async function topicConfigs (adm, topic) {
  const { resources } = await adm.describeConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }], includeSynonyms: false })
  const out = {}
  for (const c of resources[0].configEntries) {
    if (['retention.ms', 'cleanup.policy', 'segment.bytes'].includes(c.configName)) out[c.configName] = { value: c.configValue, source: c.configSource, default: c.isDefault }
  }
  return out
}

const kafkajsCommands = {
  async admin (a) {
    const adm = await admin(a)
    const topic = must(a, 'topic')
    const created = await adm.createTopics({ topics: [{ topic, numPartitions: num(a, 'partitions', 3), replicationFactor: 1, configEntries: [{ name: 'retention.ms', value: '3600000' }] }] })
    emit('created', { topic, created })
    emit('create-again', { created: await adm.createTopics({ topics: [{ topic, numPartitions: 1, replicationFactor: 1 }] }) })
    emit('listed', { topics: await adm.listTopics() })
    const { topics } = await adm.fetchTopicMetadata({ topics: [topic] })
    emit('described', { topic, leaders: Object.fromEntries(topics[0].partitions.map((p) => [p.partitionId, p.leader])) })
    emit('configs', { configs: await topicConfigs(adm, topic) })
    // kafkajs has only the legacy AlterConfigs, which replaces the topic's whole set
    await adm.alterConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'retention.ms', value: '7200000' }, { name: 'cleanup.policy', value: 'compact' }] }] })
    emit('configs', { configs: await topicConfigs(adm, topic) })
    emit('alter-unknown', { error: await attempt(() => adm.alterConfigs({ resources: [{ type: ConfigResourceTypes.TOPIC, name: topic, configEntries: [{ name: 'no.such.config', value: '1' }] }] })) })
    await adm.createPartitions({ topicPartitions: [{ topic, count: 5 }] })
    emit('partitions', { count: (await adm.fetchTopicMetadata({ topics: [topic] })).topics[0].partitions.length })
    emit('shrink-partitions', { error: await attempt(() => adm.createPartitions({ topicPartitions: [{ topic, count: 2 }] })) })
    const cluster = await adm.describeCluster()
    emit('cluster', { brokers: cluster.brokers, controller: cluster.controller, cluster_id: cluster.clusterId })
    await adm.deleteTopics({ topics: [topic] })
    emit('delete-again', { error: await attempt(() => adm.deleteTopics({ topics: [topic] })) })
    emit('listed', { topics: await adm.listTopics() })
    await adm.disconnect()
  },

  async create (a) {
    const adm = await admin(a)
    const spec = topicsSpec(a)
    await adm.createTopics({ topics: Object.entries(spec).map(([topic, numPartitions]) => ({ topic, numPartitions, replicationFactor: 1 })) })
    for (const [topic, partitions] of Object.entries(spec)) emit('created', { topic, partitions })
    await adm.disconnect()
  },

  async produce (a) {
    const idempotent = a.idempotent === '1'
    const producer = kafka(a).producer({ idempotent, maxInFlightRequests: idempotent ? 1 : undefined, allowAutoTopicCreation: false })
    await producer.connect()
    const start = num(a, 'start', 0)
    const partitions = num(a, 'partitions', 1)
    const messages = []
    for (let i = start; i < start + num(a, 'count', 100); i++) messages.push({ key: key(i), value: value(i), headers: { i: String(i) }, partition: i % partitions })
    const results = await producer.send({ topic: must(a, 'topic'), acks: -1, compression: CODECS[a.codec || 'none'], messages })
    // one result per partition: its base offset; the records of a partition follow in order
    const next = Object.fromEntries(results.map((r) => [r.partition, Number(r.baseOffset)]))
    for (const m of messages) emit('produced', { partition: m.partition, offset: next[m.partition]++, key: m.key.toString() })
    await producer.disconnect()
  },

  // a consumer of a group of its own (kafkajs has no group-less consumer), from the start
  async consume (a) {
    const consumer = kafka(a).consumer({ groupId: `reader-${process.pid}-${Date.now()}`, readUncommitted: a.isolation !== 'committed', maxWaitTimeInMs: 100 })
    await consumer.connect()
    await consumer.subscribe({ topics: must(a, 'topic').split(','), fromBeginning: true })
    let seen = 0
    await consumer.run({ autoCommit: false, eachMessage: async ({ topic, partition, message }) => {
      seen++
      record(topic, partition, message.offset, message.key, message.value, Object.fromEntries(Object.entries(message.headers).map(([k, v]) => [k, v.toString()])))
    } })
    await settle(a, () => seen)
    await consumer.disconnect()
  },

  async member (a) {
    const name = must(a, 'name')
    const consumer = kafka(a).consumer({ groupId: must(a, 'group'), heartbeatInterval: 500, sessionTimeout: 10000, rebalanceTimeout: 10000, maxWaitTimeInMs: 100 })
    consumer.on(consumer.events.GROUP_JOIN, (e) => emit('assigned', { member: name, partitions: e.payload.memberAssignment }))
    consumer.on(consumer.events.CRASH, (e) => emit('group-error', { member: name, error: String(e.payload.error) }))
    await consumer.connect()
    await consumer.subscribe({ topics: [must(a, 'topic')], fromBeginning: true })
    await consumer.run({ autoCommit: false, eachMessage: async ({ topic, partition, message }) => {
      record(topic, partition, message.offset, message.key, null, null, name)
      await consumer.commitOffsets([{ topic, partition, offset: String(BigInt(message.offset) + 1n) }])
    } })
    await stopped
    await consumer.disconnect() // leaves the group
    emit('closed', { member: name })
  },

  async groups (a) {
    const adm = await admin(a)
    const group = must(a, 'group')
    const topic = must(a, 'topic')
    const { groups } = await adm.listGroups()
    emit('listed-groups', { groups: Object.fromEntries(groups.map((g) => [g.groupId, { protocol_type: g.protocolType }])) })
    const described = (await adm.describeGroups([group])).groups[0]
    emit('described-group', { group: described.groupId, state: described.state, protocol_type: described.protocolType, protocol: described.protocol, members: described.members.length, error: described.errorCode ? String(described.errorCode) : '' })
    const fetched = await adm.fetchOffsets({ groupId: group, topics: [topic] })
    emit('offsets', { group, offsets: Object.fromEntries(fetched.map((t) => [t.topic, Object.fromEntries(t.partitions.map((p) => [p.partition, Number(p.offset)]))])) })
    const ends = await adm.fetchTopicOffsets(topic)
    emit('end-offsets', { topic, end: Object.fromEntries(ends.map((p) => [p.partition, Number(p.high)])), start: Object.fromEntries(ends.map((p) => [p.partition, Number(p.low)])) })
    if (a['delete-to']) {
      await adm.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: a['delete-to'] }] })
      const after = await adm.fetchTopicOffsets(topic)
      emit('deleted-records', { start: Object.fromEntries(after.map((p) => [p.partition, Number(p.low)])),
        beyond_end: await attempt(() => adm.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: String(2 ** 40) }] })) })
    }
    await adm.disconnect()
  },

  // a transactional producer commits `count` records, then writes `aborted` more and aborts
  async txn (a) {
    const producer = kafka(a).producer({ transactionalId: must(a, 'txn-id'), idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false })
    await producer.connect()
    const topic = must(a, 'topic')
    const partitions = num(a, 'partitions', 1)
    const batch = (start, count) => Array.from({ length: count }, (_, n) => ({ key: key(start + n), value: value(start + n), headers: { i: String(start + n) }, partition: (start + n) % partitions }))
    const committed = await producer.transaction()
    await committed.send({ topic, messages: batch(0, num(a, 'count', 10)) })
    await committed.commit()
    emit('committed', { records: num(a, 'count', 10) })
    const aborted = await producer.transaction()
    await aborted.send({ topic, messages: batch(1000, num(a, 'aborted', 0)) })
    await aborted.abort()
    emit('aborted', { records: num(a, 'aborted', 0) })
    await producer.disconnect()
  }
}

export default kafkajsCommands
