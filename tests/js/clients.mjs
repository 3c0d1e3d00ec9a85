// The JavaScript Kafka clients (kafkajs, @platformatic/kafka) through one scenario each, printing
// what they did as JSON lines for tests/test_js_clients.py:
//
//   node clients.mjs CLIENT COMMAND key=value...
//
// CLIENT is kafkajs or platformatic; the commands are those of tests/go (admin, create, produce,
// consume, member, groups, txn; produce and consume take comma-separated topics). The programs are dumb: the test decides what is right. A failure
// prints {"kind":"error",...} and exits 1.
import { emit, fail } from './common.mjs'
import kafkajsCommands from './kafkajs.mjs'
import platformaticCommands from './platformatic.mjs'

async function main () {
  const [client, command, ...rest] = process.argv.slice(2)
  const commands = { kafkajs: kafkajsCommands, platformatic: platformaticCommands }[client]
  if (!commands) fail(`unknown client ${client}`)
  if (!commands[command]) fail(`client ${client} has no command ${command}`)
  const a = Object.fromEntries(rest.map((arg) => { const i = arg.indexOf('='); return [arg.slice(0, i), arg.slice(i + 1)] }))
  if (command === 'produce') { // topic=a,b codec=x,y: a with x, then b with y
    const codecs = (a.codec || 'none').split(',')
    for (const [i, topic] of a.topic.split(',').entries()) await commands.produce({ ...a, topic, codec: codecs[Math.min(i, codecs.length - 1)] })
  } else {
    await commands[command](a)
  }
  emit('done')
  process.exit(0)
}

main().catch((e) => fail(`${e.name}: ${e.message}${e.cause ? ` (${e.cause})` : ''}${e.errors ? ' ' + JSON.stringify(e.errors.map(String)) : ''}`))
