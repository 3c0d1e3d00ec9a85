import java.io.BufferedReader;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.lang.reflect.InvocationTargetException;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Base64;
import java.util.concurrent.CompletableFuture;

import org.apache.kafka.common.utils.Exit;

/**
 * Runs Kafka's command-line tools one after another in one JVM, for tests/kafka_tools.py: a
 * JVM start and a cold JIT per tool run are most of what the tool tests spend.
 *
 * <p>Each request is one line on stdin, tab-separated base64 fields: the main class, the
 * tool's stdin, then its arguments. The tool's main runs on a thread of its own with
 * System.out, System.err and System.in replaced; the answer is one line on the real stdout:
 * the exit code, then base64 of what the tool printed on stdout and on stderr. Kafka's tools
 * end through {@link Exit}, whose procedure here completes the run and parks the tool's thread
 * (nothing after an exit may run, as in a JVM that exits). A tool that calls System.exit ends
 * this JVM: the caller then runs it in a JVM of its own. At the end of stdin this JVM exits.
 */
public final class ToolRunner {
    private static final ThreadGroup TOOLS = new ThreadGroup("tools");
    private static volatile CompletableFuture<Integer> current;

    private ToolRunner() {
    }

    private static void exited(int code) {
        CompletableFuture<Integer> run = current;
        if (run != null) {
            run.complete(code);
        }
        while (true) {
            try {
                Thread.sleep(Long.MAX_VALUE);
            } catch (InterruptedException e) {
                // still exited
            }
        }
    }

    private static String text(String field) {
        return new String(Base64.getDecoder().decode(field), StandardCharsets.UTF_8);
    }

    private static String encoded(ByteArrayOutputStream bytes) {
        return Base64.getEncoder().encodeToString(bytes.toByteArray());
    }

    public static void main(String[] args) throws Exception {
        PrintStream answers = new PrintStream(new FileOutputStream(FileDescriptor.out), true,
                StandardCharsets.UTF_8);
        InputStream requestStream = System.in;
        BufferedReader requests = new BufferedReader(
                new InputStreamReader(requestStream, StandardCharsets.UTF_8));
        Exit.setExitProcedure((code, message) -> exited(code));
        Exit.setHaltProcedure((code, message) -> exited(code));
        Exit.setShutdownHookAdder((name, hook) -> { });
        String line;
        while ((line = requests.readLine()) != null) {
            String[] fields = line.split("\t", -1);
            String mainClass = text(fields[0]);
            byte[] input = Base64.getDecoder().decode(fields[1]);
            String[] toolArgs = Arrays.stream(fields, 2, fields.length).map(ToolRunner::text)
                    .toArray(String[]::new);
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            ByteArrayOutputStream err = new ByteArrayOutputStream();
            PrintStream toolOut = new PrintStream(out, true, StandardCharsets.UTF_8);
            PrintStream toolErr = new PrintStream(err, true, StandardCharsets.UTF_8);
            CompletableFuture<Integer> run = new CompletableFuture<>();
            current = run;
            System.setOut(toolOut);
            System.setErr(toolErr);
            System.setIn(new ByteArrayInputStream(input));
            Thread tool = new Thread(TOOLS, () -> {
                try {
                    Class.forName(mainClass).getMethod("main", String[].class)
                            .invoke(null, (Object) toolArgs);
                    run.complete(0);
                } catch (InvocationTargetException e) {
                    System.err.print("Exception in thread \"main\" ");
                    e.getCause().printStackTrace();
                    run.complete(1);
                } catch (ReflectiveOperationException | RuntimeException e) {
                    e.printStackTrace();
                    run.complete(1);
                }
            }, "main");
            tool.setDaemon(true);
            tool.start();
            int code = run.get();
            current = null;
            toolOut.flush();
            toolErr.flush();
            answers.println(code + "\t" + encoded(out) + "\t" + encoded(err));
        }
        Runtime.getRuntime().halt(0);
    }
}
