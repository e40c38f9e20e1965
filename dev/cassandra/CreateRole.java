// Creates (or updates) the login role of the secured local Cassandra through the default
// superuser. Run by dev/stack with the Cassandra jars on the class path (java source launcher):
//   RTDP_ROLE_NAME=... RTDP_ROLE_PASSWORD=... java -cp 'lib/*' CreateRole.java HOST PORT
// The password comes from the environment, so it is on no command line and in no log.
import com.datastax.driver.core.Cluster;
import com.datastax.driver.core.ProtocolVersion;
import com.datastax.driver.core.Session;

public class CreateRole {
    public static void main(String[] arguments) throws Exception {
        String host = arguments[0];
        int port = Integer.parseInt(arguments[1]);
        String role = System.getenv("RTDP_ROLE_NAME");
        String password = System.getenv("RTDP_ROLE_PASSWORD");
        if (role == null || !role.matches("[a-z][a-z0-9_]*") || password == null || password.isEmpty()) {
            throw new IllegalArgumentException("RTDP_ROLE_NAME (lower-case identifier) and RTDP_ROLE_PASSWORD must be set");
        }
        String literal = "'" + password.replace("'", "''") + "'";
        // The default superuser is set up a moment after the node starts listening: retry.
        long deadline = System.currentTimeMillis() + 90_000;
        while (true) {
            try (Cluster cluster = Cluster.builder().addContactPoint(host).withPort(port)
                    .withProtocolVersion(ProtocolVersion.V4).withCredentials("cassandra", "cassandra")
                    .withoutJMXReporting().withoutMetrics().build();
                 Session session = cluster.connect()) {
                session.execute("CREATE ROLE IF NOT EXISTS " + role + " WITH LOGIN = true AND PASSWORD = " + literal);
                session.execute("ALTER ROLE " + role + " WITH LOGIN = true AND PASSWORD = " + literal);
                System.out.println("role " + role + " ready");
                return;
            } catch (RuntimeException error) {
                if (System.currentTimeMillis() > deadline) {
                    throw error;
                }
                System.out.println("waiting for the default superuser: " + error.getMessage());
                Thread.sleep(2_000);
            }
        }
    }
}
