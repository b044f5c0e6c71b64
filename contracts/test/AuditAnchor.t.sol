// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test, Vm} from "forge-std/Test.sol";
import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {AuditAnchor} from "../AuditAnchor.sol";

contract AuditAnchorTest is Test {
    event Anchored(address indexed member, uint64 indexed firstSeq, uint64 lastSeq, bytes32 root);

    AuditAnchor internal anchorC;
    address internal admin = makeAddr("admin");
    address internal alice = makeAddr("alice");
    address internal bob = makeAddr("bob");
    address internal mallory = makeAddr("mallory");
    bytes32 internal memberRole;

    bytes32 internal constant R1 = keccak256("root-1");
    bytes32 internal constant R2 = keccak256("root-2");
    bytes32 internal constant R3 = keccak256("root-3");

    function setUp() public {
        anchorC = new AuditAnchor(admin);
        memberRole = anchorC.MEMBER_ROLE();
        vm.startPrank(admin);
        anchorC.grantRole(memberRole, alice);
        anchorC.grantRole(memberRole, bob);
        vm.stopPrank();
    }

    // ------------------------------------------------------------------ helpers

    function _anchor(address who, uint64 first, uint64 last, bytes32 root) internal {
        vm.prank(who);
        anchorC.anchor(first, last, root);
    }

    /// Anchors [1, n] for `who` as a single range and returns the next expected seq.
    function _prefill(address who, uint64 n, bytes32 root) internal returns (uint64) {
        if (n == 0) return 1;
        _anchor(who, 1, n, root);
        return n + 1;
    }

    function _assertAnchor(address who, uint64 first, uint64 expLast, bytes32 expRoot) internal view {
        (uint64 l, bytes32 r) = anchorC.anchorOf(who, first);
        assertEq(l, expLast, "anchorOf.lastSeq");
        assertEq(r, expRoot, "anchorOf.root");
    }

    // ------------------------------------------------------------- deployment

    function test_MemberRoleConstant() public view {
        assertEq(anchorC.MEMBER_ROLE(), keccak256("MEMBER_ROLE"));
    }

    function test_ConstructorGrantsAdminOnly() public {
        assertTrue(anchorC.hasRole(anchorC.DEFAULT_ADMIN_ROLE(), admin));
        assertFalse(anchorC.hasRole(memberRole, admin));
        AuditAnchor fresh = new AuditAnchor(bob);
        assertTrue(fresh.hasRole(fresh.DEFAULT_ADMIN_ROLE(), bob));
        assertFalse(fresh.hasRole(fresh.DEFAULT_ADMIN_ROLE(), address(this)));
    }

    function test_ViewsAreZeroWhenNothingAnchored() public view {
        assertEq(anchorC.lastAnchored(alice), 0);
        _assertAnchor(alice, 1, 0, bytes32(0));
        _assertAnchor(alice, 0, 0, bytes32(0));
    }

    // ---------------------------------------------------------------- happy path

    function test_FirstAnchorEmitsAndStores() public {
        vm.expectEmit(true, true, false, true, address(anchorC));
        emit Anchored(alice, 1, 10, R1);
        _anchor(alice, 1, 10, R1);
        assertEq(anchorC.lastAnchored(alice), 10);
        _assertAnchor(alice, 1, 10, R1);
        // Interior sequence numbers are not anchor keys.
        _assertAnchor(alice, 5, 0, bytes32(0));
    }

    function test_SubsequentAnchorsAreContiguous() public {
        _anchor(alice, 1, 10, R1);
        vm.expectEmit(true, true, false, true, address(anchorC));
        emit Anchored(alice, 11, 11, R2);
        _anchor(alice, 11, 11, R2);
        _anchor(alice, 12, 40, R3);
        assertEq(anchorC.lastAnchored(alice), 40);
        _assertAnchor(alice, 1, 10, R1);
        _assertAnchor(alice, 11, 11, R2);
        _assertAnchor(alice, 12, 40, R3);
    }

    function test_MembersHaveIndependentSequences() public {
        _anchor(alice, 1, 10, R1);
        _anchor(bob, 1, 3, R2);
        assertEq(anchorC.lastAnchored(alice), 10);
        assertEq(anchorC.lastAnchored(bob), 3);
        _assertAnchor(bob, 1, 3, R2);
        _assertAnchor(alice, 1, 10, R1);
    }

    /// Measures call gas of a first and of a subsequent anchor (see report).
    function test_GasFirstAndSubsequentAnchor() public {
        vm.prank(alice);
        anchorC.anchor(1, 100, R1);
        Vm.Gas memory g1 = vm.lastCallGas();
        vm.prank(alice);
        anchorC.anchor(101, 200, R2);
        Vm.Gas memory g2 = vm.lastCallGas();
        emit log_named_uint("gas first anchor (call)", g1.gasTotalUsed);
        emit log_named_uint("gas subsequent anchor (call)", g2.gasTotalUsed);
        assertLt(g2.gasTotalUsed, g1.gasTotalUsed);
    }

    // ------------------------------------------------------------ rejections

    function test_RevertEmptyRoot() public {
        vm.expectRevert(AuditAnchor.EmptyRoot.selector);
        _anchor(alice, 1, 1, bytes32(0));
    }

    function test_RevertInvalidRange() public {
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.InvalidRange.selector, uint64(5), uint64(4)));
        _anchor(alice, 5, 4, R1);
    }

    function test_RevertGapOnFirstAnchor() public {
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Gap.selector, uint64(1), uint64(2)));
        _anchor(alice, 2, 5, R1);
    }

    function test_RevertGapAfterAnchor() public {
        _anchor(alice, 1, 10, R1);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Gap.selector, uint64(11), uint64(12)));
        _anchor(alice, 12, 20, R2);
    }

    function test_RevertOverlapZeroFirstSeq() public {
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, uint64(1), uint64(0)));
        _anchor(alice, 0, 5, R1);
    }

    function test_RevertOverlapInsideRange() public {
        _anchor(alice, 1, 10, R1);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, uint64(11), uint64(5)));
        _anchor(alice, 5, 15, R2);
    }

    function test_RepeatIsSilentNoOp() public {
        _anchor(alice, 1, 10, R1);
        _anchor(alice, 11, 20, R2);
        vm.recordLogs();
        _anchor(alice, 1, 10, R1);
        _anchor(alice, 11, 20, R2);
        assertEq(vm.getRecordedLogs().length, 0, "no event on repeat");
        assertEq(anchorC.lastAnchored(alice), 20);
        _assertAnchor(alice, 1, 10, R1);
        _assertAnchor(alice, 11, 20, R2);
    }

    function test_RepeatWithDifferentRootOverlaps() public {
        _anchor(alice, 1, 10, R1);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, uint64(11), uint64(1)));
        _anchor(alice, 1, 10, R2);
    }

    function test_RepeatWithDifferentLastSeqOverlaps() public {
        _anchor(alice, 1, 10, R1);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, uint64(11), uint64(1)));
        _anchor(alice, 1, 9, R1);
    }

    function test_RepeatOfOtherMembersAnchorIsNotNoOp() public {
        _anchor(alice, 1, 10, R1);
        // bob has nothing anchored: (1,10,R1) is a brand new anchor for him.
        _anchor(bob, 1, 10, R1);
        assertEq(anchorC.lastAnchored(bob), 10);
    }

    function test_FullLogReportsOverlapWithZeroExpected() public {
        uint64 max = type(uint64).max;
        _anchor(alice, 1, max, R1);
        assertEq(anchorC.lastAnchored(alice), max);
        _anchor(alice, 1, max, R1); // exact repeat still a no-op
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, uint64(0), max));
        _anchor(alice, max, max, R2);
    }

    // --------------------------------------------------------------- roles

    function test_NonMemberReverts() public {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, mallory, memberRole)
        );
        _anchor(mallory, 1, 1, R1);
    }

    function test_AdminIsNotImplicitlyMember() public {
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, admin, memberRole)
        );
        _anchor(admin, 1, 1, R1);
    }

    function test_AdminGrantsAndRevokesMember() public {
        vm.prank(admin);
        anchorC.grantRole(memberRole, mallory);
        _anchor(mallory, 1, 2, R1);
        vm.prank(admin);
        anchorC.revokeRole(memberRole, mallory);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, mallory, memberRole)
        );
        _anchor(mallory, 3, 4, R2);
        // History survives revocation; a re-granted member continues its sequence.
        _assertAnchor(mallory, 1, 2, R1);
        vm.prank(admin);
        anchorC.grantRole(memberRole, mallory);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Gap.selector, uint64(3), uint64(5)));
        _anchor(mallory, 5, 6, R2);
        _anchor(mallory, 3, 4, R2);
    }

    function test_NonAdminCannotGrant() public {
        bytes32 adminRole = anchorC.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, alice, adminRole)
        );
        vm.prank(alice);
        anchorC.grantRole(memberRole, mallory);
    }

    // ================================================================ fuzz
    // Each fuzz test runs [fuzz] runs (>= 256, see foundry.toml) cases.

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_ContiguousChainAccepted(uint64 seed, uint8 count) public {
        uint256 n = bound(count, 1, 12);
        uint64 next = 1;
        for (uint256 i = 0; i < n; i++) {
            uint64 len = uint64(bound(uint256(keccak256(abi.encode(seed, i))), 1, 1_000_000));
            uint64 last = next + len - 1;
            bytes32 root = keccak256(abi.encode(seed, i, "root"));
            vm.expectEmit(true, true, false, true, address(anchorC));
            emit Anchored(alice, next, last, root);
            _anchor(alice, next, last, root);
            assertEq(anchorC.lastAnchored(alice), last);
            _assertAnchor(alice, next, last, root);
            next = last + 1;
        }
        assertEq(anchorC.lastAnchored(bob), 0, "other member untouched");
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_GapReverts(uint64 prefix, uint64 firstSeq, uint64 lastSeq, bytes32 root) public {
        prefix = uint64(bound(prefix, 0, type(uint64).max - 2));
        uint64 expected = _prefill(alice, prefix, R1);
        firstSeq = uint64(bound(firstSeq, uint256(expected) + 1, type(uint64).max));
        lastSeq = uint64(bound(lastSeq, firstSeq, type(uint64).max));
        vm.assume(root != bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Gap.selector, expected, firstSeq));
        _anchor(alice, firstSeq, lastSeq, root);
        assertEq(anchorC.lastAnchored(alice), prefix);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_OverlapReverts(uint64 prefix, uint64 firstSeq, uint64 lastSeq, bytes32 root) public {
        prefix = uint64(bound(prefix, 1, type(uint64).max - 1));
        uint64 expected = _prefill(alice, prefix, R1);
        firstSeq = uint64(bound(firstSeq, 0, prefix));
        lastSeq = uint64(bound(lastSeq, firstSeq, type(uint64).max));
        vm.assume(root != bytes32(0));
        // Exclude the single exact repeat (covered by the no-op fuzz test).
        vm.assume(!(firstSeq == 1 && lastSeq == prefix && root == R1));
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, expected, firstSeq));
        _anchor(alice, firstSeq, lastSeq, root);
        assertEq(anchorC.lastAnchored(alice), prefix);
        _assertAnchor(alice, 1, prefix, R1);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_ExactRepeatIsNoOp(uint64 len1, uint64 len2, bytes32 root1, bytes32 root2, bool repeatFirst)
        public
    {
        len1 = uint64(bound(len1, 1, 1e12));
        len2 = uint64(bound(len2, 1, 1e12));
        vm.assume(root1 != bytes32(0) && root2 != bytes32(0));
        _anchor(alice, 1, len1, root1);
        _anchor(alice, len1 + 1, len1 + len2, root2);

        (uint64 f, uint64 l, bytes32 r) = repeatFirst ? (1, len1, root1) : (len1 + 1, len1 + len2, root2);
        vm.recordLogs();
        _anchor(alice, f, l, r);
        assertEq(vm.getRecordedLogs().length, 0, "repeat must not emit");
        assertEq(anchorC.lastAnchored(alice), len1 + len2);
        _assertAnchor(alice, 1, len1, root1);
        _assertAnchor(alice, len1 + 1, len1 + len2, root2);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_RepeatWithDifferentDataOverlaps(uint64 len, uint64 otherLast, bytes32 root, bytes32 otherRoot)
        public
    {
        len = uint64(bound(len, 1, type(uint64).max - 1));
        vm.assume(root != bytes32(0) && otherRoot != bytes32(0));
        otherLast = uint64(bound(otherLast, 1, type(uint64).max));
        vm.assume(otherLast != len || otherRoot != root);
        _anchor(alice, 1, len, root);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.Overlap.selector, len + 1, uint64(1)));
        _anchor(alice, 1, otherLast, otherRoot);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_InvalidRangeReverts(uint64 firstSeq, uint64 lastSeq, bytes32 root, uint64 prefix) public {
        vm.assume(root != bytes32(0));
        firstSeq = uint64(bound(firstSeq, 1, type(uint64).max));
        lastSeq = uint64(bound(lastSeq, 0, firstSeq - 1));
        prefix = uint64(bound(prefix, 0, 1000));
        _prefill(alice, prefix, R1);
        vm.expectRevert(abi.encodeWithSelector(AuditAnchor.InvalidRange.selector, firstSeq, lastSeq));
        _anchor(alice, firstSeq, lastSeq, root);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_EmptyRootReverts(uint64 firstSeq, uint64 lastSeq, uint64 prefix) public {
        prefix = uint64(bound(prefix, 0, 1000));
        _prefill(alice, prefix, R1);
        vm.expectRevert(AuditAnchor.EmptyRoot.selector);
        _anchor(alice, firstSeq, lastSeq, bytes32(0));
        assertEq(anchorC.lastAnchored(alice), prefix);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_NonMemberReverts(address caller, uint64 firstSeq, uint64 lastSeq, bytes32 root) public {
        vm.assume(!anchorC.hasRole(memberRole, caller));
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, memberRole)
        );
        _anchor(caller, firstSeq, lastSeq, root);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_AdminGrantRevokeMember(address member, uint64 len, bytes32 root) public {
        vm.assume(member != alice && member != bob && member != address(0));
        len = uint64(bound(len, 1, type(uint64).max - 1));
        vm.assume(root != bytes32(0));

        vm.prank(admin);
        anchorC.grantRole(memberRole, member);
        assertTrue(anchorC.hasRole(memberRole, member));
        _anchor(member, 1, len, root);
        assertEq(anchorC.lastAnchored(member), len);

        vm.prank(admin);
        anchorC.revokeRole(memberRole, member);
        assertFalse(anchorC.hasRole(memberRole, member));
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, member, memberRole)
        );
        _anchor(member, len + 1, len + 1, root);
    }

    /// forge-config: default.fuzz.runs = 512
    function testFuzz_NonAdminCannotGrantOrRevoke(address caller, address target) public {
        vm.assume(caller != admin);
        bytes32 adminRole = anchorC.DEFAULT_ADMIN_ROLE();
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, adminRole)
        );
        vm.prank(caller);
        anchorC.grantRole(memberRole, target);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, caller, adminRole)
        );
        vm.prank(caller);
        anchorC.revokeRole(memberRole, alice);
    }
}
