// @platformatic/kafka 2.12.1 (pure JavaScript, its own codecs; zstd from node:zlib):
// Producer (idempotent, transactional), Consumer (classic and KIP-848 consumer groups) and Admin.
import { emit, key, must, num, record, require, settle, stopped, topicsSpec, value } from './common.mjs'

const { Admin, Consumer, Producer, ConfigResourceTypes, IncrementalAlterConfigOperationTypes } = require('@platformatic/kafka')

const base = (a) => ({ clientId: a.name || 'akfak-tests-platformatic', bootstrapBrokers: [must(a, 'bootstrap')], retries: 5, retryDelay: 100 })

// Kafka's error name: platformatic's errors nest the protocol errors they met
function errName (e) {
  if (!e) return ''
  const walk = (x) => x.apiId || (x.errors || []).map(walk).find(Boolean)
  return walk(e) || `${e.name}: ${e.message}`
}

async function attempt (fn) {
  try { await fn(); return '' } catch (e) { return errName(e) }
}

async function topicConfigs (adm, topic) {
  const [described] = await adm.describeConfigs({ resources: [{ resourceType: ConfigResourceTypes.TOPIC, resourceName: topic }] })
  const out = {}
  for (const c of described.configs) {
    if (['retention.ms', 'cleanup.policy', 'segment.bytes'].includes(c.name)) out[c.name] = { value: c.value, source: c.configSource }
  }
  return out
}

const headersOf = (m) => Object.fromEntries([...m.headers].map(([k, v]) => [k.toString(), v.toString()]))

const platformaticCommands = {
  async admin (a) {
    const adm = new Admin(base(a))
    const topic = must(a, 'topic')
    const created = await adm.createTopics({ topics: [topic], partitions: num(a, 'partitions', 3), replicas: 1, configs: [{ name: 'retention.ms', value: '3600000' }] })
    emit('created', { topic, partitions: created[0].partitions })
    emit('create-again', { error: await attempt(() => adm.createTopics({ topics: [topic], partitions: 1, replicas: 1 })) })
    emit('listed', { topics: await adm.listTopics() })
    emit('configs', { configs: await topicConfigs(adm, topic) })
    const set = (name, value) => ({ name, value, configOperation: IncrementalAlterConfigOperationTypes.SET })
    await adm.incrementalAlterConfigs({ resources: [{ resourceType: ConfigResourceTypes.TOPIC, resourceName: topic, configs: [set('retention.ms', '7200000'), set('cleanup.policy', 'compact')] }] })
    emit('configs', { configs: await topicConfigs(adm, topic) })
    emit('alter-unknown', { error: await attempt(() => adm.incrementalAlterConfigs({ resources: [{ resourceType: ConfigResourceTypes.TOPIC, resourceName: topic, configs: [set('no.such.config', '1')] }] })) })
    await adm.createPartitions({ topics: [{ name: topic, count: 5 }] })
    const dirs = await adm.describeLogDirs({ topics: [{ name: topic, partitions: [0, 1, 2, 3, 4] }] })
    emit('log-dirs', { dirs: dirs.map((d) => ({ broker: d.broker, dirs: d.results.map((r) => ({ dir: r.logDir, partitions: r.topics.filter((t) => t.name === topic).flatMap((t) => t.partitions.map((p) => p.partitionIndex)), total_bytes: r.totalBytes, usable_bytes: r.usableBytes })) })) })
    emit('shrink-partitions', { error: await attempt(() => adm.createPartitions({ topics: [{ name: topic, count: 2 }] })) })
    await adm.deleteTopics({ topics: [topic] })
    emit('delete-again', { error: await attempt(() => adm.deleteTopics({ topics: [topic] })) })
    emit('listed', { topics: await adm.listTopics() })
    await adm.close()
  },

  async create (a) {
    const adm = new Admin(base(a))
    for (const [topic, partitions] of Object.entries(topicsSpec(a))) {
      await adm.createTopics({ topics: [topic], partitions, replicas: 1 })
      emit('created', { topic, partitions })
    }
    await adm.close()
  },

  async produce (a) {
    const producer = new Producer({ ...base(a), idempotent: a.idempotent === '1', acks: -1, compression: a.codec || 'none', autocreateTopics: false })
    const start = num(a, 'start', 0)
    const partitions = num(a, 'partitions', 1)
    const topic = must(a, 'topic')
    const messages = []
    for (let i = start; i < start + num(a, 'count', 100); i++) messages.push({ topic, key: key(i), value: value(i), headers: new Map([[Buffer.from('i'), Buffer.from(String(i))]]), partition: i % partitions })
    const result = await producer.send({ messages })
    const next = Object.fromEntries(result.offsets.map((o) => [o.partition, Number(o.offset)]))
    for (const m of messages) emit('produced', { partition: m.partition, offset: next[m.partition]++, key: m.key.toString() })
    await producer.close()
  },

  // a consumer of a group of its own, from the earliest offsets, committing nothing
  async consume (a) {
    const consumer = new Consumer({ ...base(a), groupId: `reader-${process.pid}-${Date.now()}`, maxWaitTime: 100 })
    const stream = await consumer.consume({ topics: must(a, 'topic').split(','), mode: 'earliest', autocommit: false, isolationLevel: a.isolation === 'committed' ? 1 : 0 })
    let seen = 0
    stream.on('data', (m) => { seen++; record(m.topic, m.partition, m.offset, m.key, m.value, headersOf(m)) })
    await settle(a, () => seen)
    await stream.close()
    await consumer.close()
  },

  async member (a) {
    const name = must(a, 'name')
    // protocol=consumer: KIP-848 (ConsumerGroupHeartbeat; the broker assigns, the interval is its own)
    const group = a.protocol === 'consumer'
      ? { groupProtocol: 'consumer' }
      : { heartbeatInterval: 500, sessionTimeout: 10000, rebalanceTimeout: 10000 }
    const consumer = new Consumer({ ...base(a), groupId: must(a, 'group'), ...group, maxWaitTime: 100 })
    let assigned = ''
    const report = () => { // the consumer protocol's join event carries no assignment: watch for changes
      const now = JSON.stringify(Object.fromEntries((consumer.assignments || []).map((t) => [t.topic, [...t.partitions].sort((x, y) => x - y)])))
      if (now !== assigned) emit('assigned', { member: name, partitions: JSON.parse(assigned = now) })
    }
    const watch = a.protocol === 'consumer' ? setInterval(report, 100) : null
    if (!watch) consumer.on('consumer:group:join', (e) => emit('assigned', { member: name, partitions: e.assignments }))
    const stream = await consumer.consume({ topics: [must(a, 'topic')], mode: 'committed', fallbackMode: 'earliest', autocommit: false })
    let pending = Promise.resolve()
    stream.on('data', (m) => {
      record(m.topic, m.partition, m.offset, m.key, null, null, name)
      pending = pending.then(() => m.commit())
    })
    stream.on('error', (e) => emit('group-error', { member: name, error: String(e) }))
    await stopped
    clearInterval(watch)
    await pending
    await stream.close()
    await consumer.close() // leaves the group
    emit('closed', { member: name })
  },

  async groups (a) {
    const adm = new Admin(base(a))
    const group = must(a, 'group')
    const topic = must(a, 'topic')
    const listed = await adm.listGroups({ types: ['classic', 'consumer'] }) // its default: classic only
    emit('listed-groups', { groups: Object.fromEntries([...listed.values()].map((g) => [g.id, { state: g.state, protocol_type: g.protocolType, group_type: g.groupType }])) })
    // DescribeGroups is for classic groups (Kafka describes a consumer group there as Dead)
    const described = a.type === 'consumer' ? null : (await adm.describeGroups({ groups: [group] })).get(group)
    if (described) emit('described-group', { group, state: described.state, protocol_type: described.protocolType, protocol: described.protocol, members: described.members.size })
    const [fetched] = await adm.listConsumerGroupOffsets({ groups: [group] })
    emit('offsets', { group, offsets: Object.fromEntries(fetched.topics.map((t) => [t.name, Object.fromEntries(t.partitions.map((p) => [p.partitionIndex, Number(p.committedOffset)]))])) })
    const partitions = (n) => Array.from({ length: n }, (_, i) => ({ partitionIndex: i, timestamp: -1n }))
    const [ends] = await adm.listOffsets({ topics: [{ name: topic, partitions: partitions(num(a, 'partitions', 3)) }] })
    emit('end-offsets', { topic, end: Object.fromEntries(ends.partitions.map((p) => [p.partitionIndex, Number(p.offset)])) })
    if (a['delete-to']) {
      const [deleted] = await adm.deleteRecords({ topics: [{ name: topic, partitions: [{ partition: 0, offset: BigInt(a['delete-to']) }] }] })
      emit('deleted-records', { low_watermarks: Object.fromEntries(deleted.partitions.map((p) => [p.partition, Number(p.lowWatermark)])),
        beyond_end: await attempt(() => adm.deleteRecords({ topics: [{ name: topic, partitions: [{ partition: 0, offset: 2n ** 40n }] }] })) })
    }
    await adm.close()
  },

  async txn (a) {
    const producer = new Producer({ ...base(a), transactionalId: must(a, 'txn-id'), idempotent: true, acks: -1, autocreateTopics: false })
    const topic = must(a, 'topic')
    const partitions = num(a, 'partitions', 1)
    const batch = (start, count) => Array.from({ length: count }, (_, n) => ({ topic, key: key(start + n), value: value(start + n), headers: new Map([[Buffer.from('i'), Buffer.from(String(start + n))]]), partition: (start + n) % partitions }))
    const committed = await producer.beginTransaction()
    await committed.send({ messages: batch(0, num(a, 'count', 10)) })
    await committed.commit()
    emit('committed', { records: num(a, 'count', 10) })
    const aborted = await producer.beginTransaction()
    await aborted.send({ messages: batch(1000, num(a, 'aborted', 0)) })
    await aborted.abort()
    emit('aborted', { records: num(a, 'aborted', 0) })
    await producer.close()
  }
}

export default platformaticCommands
