import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;

import com.google.re2j.Pattern;
import com.google.re2j.PatternSyntaxException;

/**
 * RE2/J as Kafka's group coordinator uses it (Pattern.compile, then matcher(topic).matches()):
 * reads one hex-encoded UTF-8 regex per stdin line and prints, per line, "E" and the
 * description of the PatternSyntaxException when it does not compile, else "M" and the indexes
 * of the argument topic names it matches in full.
 * Run as a single-file program: java -cp re2j.jar Re2Oracle.java TOPIC...
 */
public final class Re2Oracle {
    public static void main(String[] topics) throws Exception {
        var in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        var out = new StringBuilder();
        for (String line; (line = in.readLine()) != null; ) {
            String regex = new String(HexFormat.of().parseHex(line.strip()), StandardCharsets.UTF_8);
            Pattern pattern;
            try {
                pattern = Pattern.compile(regex);
            } catch (PatternSyntaxException e) {
                out.append("E ").append(e.getDescription()).append('\n');
                continue;
            }
            out.append('M');
            for (int i = 0; i < topics.length; i++) {
                if (pattern.matcher(topics[i]).matches()) {
                    out.append(' ').append(i);
                }
            }
            out.append('\n');
        }
        System.out.print(out);
    }
}
