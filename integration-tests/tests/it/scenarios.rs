use daisi_integration_tests::*;
