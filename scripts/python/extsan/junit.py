"""JUnit XML for the test views of CI services (GitLab's test report, Jenkins, GitHub actions
that read JUnit): testsuite "extsan" with one testcase per distinct finding, failed when new,
skipped when suppressed or baselined; one passing testcase when there is no finding at all, so
that a clean run shows as a passed test rather than as an empty suite."""

import re
import xml.etree.ElementTree as ET

from .findings import finding_headline, finding_subject, group_findings
from .fingerprint import first_frame_identity
from .text import finding_block

# Characters XML 1.0 cannot carry at all (ElementTree would write them and break the file).
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text):
    return NOT_XML.sub("?", str(text))


def testcase_name(finding, tests):
    name = "%s: %s" % (finding.get("kind"), finding_subject(finding))
    frame = first_frame_identity(finding)
    if frame:
        name += " at %s" % frame
    if tests:
        name += " [%s]" % ", ".join(tests)
    return name


def skip_reason(finding):
    if finding.get("status") == "suppressed":
        return "suppressed by %s" % finding.get("suppressed")
    return "in the baseline (fingerprint %s)" % finding.get("fingerprint")


def junit_xml(document):
    """The JUnit XML text of a classified merged document."""
    groups = group_findings(document.get("findings", []))
    suite = ET.Element("testsuite", name="extsan")
    failures = skipped = 0
    for group in groups:
        finding = group[0]
        tests = sorted({f["test"] for f in group if isinstance(f.get("test"), str)})
        case = ET.SubElement(suite, "testcase", classname="extsan.%s" % finding.get("kind"),
                             name=xml_text(testcase_name(finding, tests)))
        if finding.get("status") in ("suppressed", "baselined"):
            skipped += 1
            ET.SubElement(case, "skipped", message=xml_text(skip_reason(finding)))
        else:
            failures += 1
            failure = ET.SubElement(case, "failure", type=str(finding.get("kind")),
                                    message=xml_text(finding_headline(finding)))
            failure.text = xml_text("".join(finding_block(f) for f in group))
    if not groups:
        ET.SubElement(suite, "testcase", classname="extsan", name="no findings")
    suite.set("tests", str(max(len(groups), 1)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    root = ET.Element("testsuites", name="extsan", tests=suite.get("tests"), failures=str(failures),
                      errors="0", skipped=str(skipped))
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"
